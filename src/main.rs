//! The `configmapwatch` binary: parses the command line, sets up logging,
//! runs the chosen command and maps its result to an exit status
//! (0 success, 1 failure or invalid config with `--once`, 2 usage error).

mod cli;

use std::{io, process::ExitCode};

use clap::Parser;
use configmapwatch::{AtomicWriter, Outcome, app, demo, shutdown_channel};

use cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = simple_logger::SimpleLogger::new()
        .with_level(cli.log_level)
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
            demo::run(&mut io::stdout()).map_err(|e| format!("demo failed: {e}"))?;
        }
        Some(Command::Publish(args)) => {
            let payload = args.payload().map_err(|e| e.chain())?;
            let writer = AtomicWriter::new(&args.dir).with_swap(args.swap());
            match writer.write(&payload).map_err(|e| e.chain())? {
                Outcome::Written { version, previous } => match previous {
                    Some(previous) => println!("published {version} (replacing {previous})"),
                    None => println!("published {version}"),
                },
                Outcome::Unchanged { version } => {
                    println!("unchanged: {version} already holds this payload")
                }
                Outcome::Interrupted { .. } => unreachable!("no hook stops this writer"),
            }
        }
        None if cli.watch.once => {
            if !app::once(&cli.watch.settings(), &mut io::stdout()) {
                return Ok(ExitCode::FAILURE);
            }
        }
        None => {
            let (shutdown, listener) = shutdown_channel();
            ctrlc::set_handler(move || shutdown.trigger())
                .map_err(|e| format!("cannot handle signals: {e}"))?;
            app::watch(&cli.watch.settings(), &listener, &mut io::stdout());
        }
    }
    Ok(ExitCode::SUCCESS)
}
