//! The `configmapwatch` binary: parses the command line, sets up logging,
//! runs the chosen command and maps its result to an exit status
//! (0 success, 1 failure or invalid config with `--once`, 2 usage error).

mod cli;
mod demo;
mod publish;
mod signals;
mod watch;

use std::{io, process::ExitCode};

use clap::{CommandFactory, Parser, error::ErrorKind};
use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(cli.log_level)
        // The HTTP client's own trace logs could show request details; ours
        // say what matters, redacted.
        .with_module_level("ureq", cli.log_level.min(log::LevelFilter::Warn))
        .with_module_level("ureq_proto", cli.log_level.min(log::LevelFilter::Warn))
        .with_utc_timestamps()
        .init()
    {
        eprintln!("configmapwatch: warning: no logging: {e}");
    }
    match run(cli) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("configmapwatch: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode, String> {
    match cli.command {
        Some(Command::Demo) => {
            demo::run(&mut io::stdout())
                .map_err(|e| format!("demo failed: {}", configmapwatch::error_chain(&*e)))?;
        }
        Some(Command::Publish(args)) => match publish::run(&args) {
            Ok(()) => {}
            Err(publish::Failure::Usage(message)) => {
                let mut cli = Cli::command();
                // Built, so that the usage line names "configmapwatch publish".
                cli.build();
                let publish = cli.find_subcommand_mut("publish").expect("publish exists");
                publish.error(ErrorKind::ValueValidation, message).exit()
            }
            Err(publish::Failure::Write(message)) => return Err(message),
        },
        None => {
            let settings = cli
                .watch
                .settings()
                .unwrap_or_else(|e| Cli::command().error(ErrorKind::ValueValidation, e).exit());
            // A missing directory is waited for; a file where the directory
            // should be is a mistake in the command line.
            for watch in &settings.watches {
                if std::fs::metadata(&watch.dir).is_ok_and(|m| !m.is_dir()) {
                    let message = format!("--dir {}: not a directory", watch.dir.display());
                    Cli::command()
                        .error(ErrorKind::ValueValidation, message)
                        .exit();
                }
            }
            if cli.watch.once {
                return Ok(match watch::once(&settings, &mut io::stdout()) {
                    true => ExitCode::SUCCESS,
                    false => ExitCode::FAILURE,
                });
            }
            let signals = signals::listen()?;
            watch::watch(&settings, &signals, io::stdout())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
