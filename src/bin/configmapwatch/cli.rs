//! The command line (clap derive). Doc comments are the help text. Parsed
//! arguments are turned into the library's validated [`Settings`]; clap
//! types stay on this side.

use std::{path::PathBuf, time::Duration};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use configmapwatch::{
    Format, OutputFormat, Selector, WatchOptions,
    actions::{
        Action, Actions, Exec, PidSource, SignalAction, Webhook, WebhookOptions, parse_header,
    },
};

use crate::watch::Settings;
use log::LevelFilter;

const EXAMPLES: &str = "\
Examples:
  Watch a mounted ConfigMap, printing the config and each change:
    configmapwatch --dir /opt/config --interval 5s

  Print every key as one JSON object per event, for a script:
    configmapwatch -d /etc/app --all-keys --output json

  Reload Prometheus, retrying until it answers 2xx:
    configmapwatch -d /etc/prometheus --webhook-url http://127.0.0.1:9090/-/reload

  Reload nginx in another container (shareProcessNamespace: true):
    configmapwatch -d /etc/nginx/conf.d --signal HUP --pid-file /var/run/nginx.pid

  Run any program with the new config on its stdin (put --exec last):
    configmapwatch -d /opt/config --exec sh -c 'jq . > /tmp/config.json'

  Check the current config once (exit 1 if missing or invalid):
    configmapwatch -d /opt/config --once

  Simulate a ConfigMap update on a dev host, the kubelet's way:
    configmapwatch publish --dir ./vol --from-file config.json --from-literal mode=debug

  See it all work on a built-in example:
    configmapwatch demo";

/// Keeps a program's config in step with a Kubernetes ConfigMap or Secret
/// volume by polling its `..data` link: no inotify, works on FUSE, network
/// filesystems, gVisor, Windows and macOS.
#[derive(Debug, Parser)]
#[command(name = "configmapwatch", version, after_help = EXAMPLES, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub watch: WatchArgs,

    /// Log level for messages on stderr: off, error, warn, info, debug, trace.
    #[arg(short = 'l', long, env = "CONFIGMAPWATCH_LOG", default_value = "info", global = true,
          value_parser = parse_level)]
    pub log_level: LevelFilter,
}

/// The subcommands; without one, configmapwatch watches.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write or update a directory exactly as the kubelet updates a ConfigMap
    /// volume (atomic `..data` swap). The payload replaces the previous one:
    /// keys not given are removed.
    Publish(crate::publish::PublishArgs),
    /// Show the main job on a built-in example: a temporary volume, three
    /// kubelet-style updates, what is detected and how late.
    Demo,
}

/// Options of the watch command.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The mounted volume directory.
    #[arg(short, long, env = "CONFIGMAPWATCH_DIR", default_value = "/opt/config")]
    pub dir: PathBuf,

    /// The key holding the config, parsed by its extension (.json, .yaml,
    /// .yml, .toml); nested keys as `a/b.yaml`. Repeat it (or separate keys
    /// with commas) to make the config an object keyed by key name.
    #[arg(
        short,
        long,
        value_name = "KEY",
        env = "CONFIGMAPWATCH_FILE",
        default_value = "config.json",
        value_delimiter = ','
    )]
    pub file: Vec<String>,

    /// Use every key: one object mapping each key to its content, parsed by
    /// extension (text for other keys; binary keys are left out with a
    /// warning). Any key's change fires.
    #[arg(long, env = "CONFIGMAPWATCH_ALL_KEYS", conflicts_with = "file")]
    pub all_keys: bool,

    /// Parse the selected keys as this format, whatever their extension.
    /// Events, webhooks and --exec still carry the config as JSON.
    #[arg(long, value_name = "FORMAT", env = "CONFIGMAPWATCH_FORMAT")]
    pub format: Option<Format>,

    /// Time between checks, e.g. 500ms, 5s, 1m.
    #[arg(short, long, value_name = "DURATION", env = "CONFIGMAPWATCH_INTERVAL", default_value = "1s",
          value_parser = parse_interval)]
    pub interval: Duration,

    /// Format of the event lines on stdout.
    #[arg(short, long, value_enum, env = "CONFIGMAPWATCH_OUTPUT", default_value_t = Output::Text)]
    pub output: Output,

    /// Print the current config and exit: 0 if valid, 1 if missing or invalid.
    #[arg(long)]
    pub once: bool,

    /// Refuse files larger than this, e.g. 1MiB (a ConfigMap holds at most 1 MiB).
    #[arg(long, value_name = "SIZE", env = "CONFIGMAPWATCH_MAX_FILE_SIZE",
          default_value = "16MiB", value_parser = parse_size)]
    pub max_file_size: u64,

    #[command(flatten)]
    pub actions: ActionArgs,
}

/// What to do on each good change.
#[derive(Debug, Args)]
#[command(next_help_heading = "Actions (run for each good change, never for an invalid one)",
          group(ArgGroup::new("pid_source").args(["pid", "pid_file"])))]
pub struct ActionArgs {
    /// Run a command: the new config on its stdin (compact JSON);
    /// CONFIGMAPWATCH_VERSION, _PREVIOUS_VERSION, _DIR and _EVENT in its
    /// environment. Every argument after --exec (or after `--exec --`)
    /// belongs to the command, so put it last. [env: CONFIGMAPWATCH_EXEC,
    /// split on spaces]
    #[arg(long, value_name = "PROGRAM [ARGS]", num_args = 1.., allow_hyphen_values = true)]
    pub exec: Vec<String>,

    /// Send the event (as --output json) to this URL; repeatable. http:// only.
    #[arg(
        long,
        value_name = "URL",
        env = "CONFIGMAPWATCH_WEBHOOK_URL",
        value_delimiter = ','
    )]
    pub webhook_url: Vec<String>,

    /// HTTP method for webhooks.
    #[arg(
        long,
        value_name = "METHOD",
        env = "CONFIGMAPWATCH_WEBHOOK_METHOD",
        default_value = "POST"
    )]
    pub webhook_method: String,

    /// Extra header for webhooks, as 'Name: value'; repeatable. Values are never logged.
    #[arg(long, value_name = "HEADER", env = "CONFIGMAPWATCH_WEBHOOK_HEADER", value_delimiter = '\n',
          value_parser = parse_header)]
    pub webhook_header: Vec<(String, String)>,

    /// Timeout of one webhook attempt.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_WEBHOOK_TIMEOUT", default_value = "5s",
          value_parser = parse_interval)]
    pub webhook_timeout: Duration,

    /// Accepted status codes, e.g. 200,204 [default: any 2xx].
    #[arg(long, value_name = "CODES", env = "CONFIGMAPWATCH_WEBHOOK_STATUS_CODE", value_delimiter = ',',
          value_parser = clap::value_parser!(u16).range(100..=599))]
    pub webhook_status_code: Vec<u16>,

    /// Retries after a failed webhook attempt (capped exponential backoff with jitter).
    #[arg(
        long,
        value_name = "N",
        env = "CONFIGMAPWATCH_WEBHOOK_RETRIES",
        default_value_t = 5
    )]
    pub webhook_retries: u32,

    /// Send this signal (HUP, USR1, USR2, TERM, ...) to the process given by
    /// --pid or --pid-file. Unix only.
    #[arg(
        long,
        value_name = "SIGNAL",
        env = "CONFIGMAPWATCH_SIGNAL",
        requires = "pid_source"
    )]
    pub signal: Option<String>,

    /// The process to signal.
    #[arg(
        long,
        value_name = "PID",
        env = "CONFIGMAPWATCH_PID",
        requires = "signal"
    )]
    pub pid: Option<u32>,

    /// A file holding the process id to signal, read at each change.
    #[arg(
        long,
        value_name = "PATH",
        env = "CONFIGMAPWATCH_PID_FILE",
        requires = "signal"
    )]
    pub pid_file: Option<PathBuf>,

    /// Also run the actions for the initial config.
    #[arg(long, env = "CONFIGMAPWATCH_ON_START")]
    pub on_start: bool,

    /// On SIGTERM, wait this long for running actions, then exit.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_SHUTDOWN_TIMEOUT", default_value = "5s",
          value_parser = parse_interval)]
    pub shutdown_timeout: Duration,
}

/// Event line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Timestamp, event, version, lag, then the config as compact JSON.
    Text,
    /// One JSON object per line.
    Json,
}

impl WatchArgs {
    /// The validated settings the library runs with; an error is a usage
    /// error.
    pub fn settings(&self) -> Result<Settings, String> {
        Ok(Settings {
            watch: WatchOptions {
                dir: self.dir.clone(),
                selector: {
                    let selector = if self.all_keys {
                        Selector::all_keys()
                    } else {
                        Selector::keys(self.file.iter().cloned())
                    };
                    match self.format {
                        Some(format) => selector.with_format(format),
                        None => selector,
                    }
                },
                interval: self.interval,
                max_file_size: self.max_file_size,
            },
            output: match self.output {
                Output::Text => OutputFormat::Text,
                Output::Json => OutputFormat::Json,
            },
            actions: self.actions.actions(&self.dir)?,
        })
    }
}

impl ActionArgs {
    fn actions(&self, dir: &std::path::Path) -> Result<Actions, String> {
        let mut list = Vec::new();
        let exec = match self.exec.is_empty() {
            true => std::env::var("CONFIGMAPWATCH_EXEC")
                .map(|s| s.split_whitespace().map(str::to_owned).collect())
                .unwrap_or_default(),
            false => self.exec.clone(),
        };
        // `--exec -- prog args` is as natural as `--exec prog args`.
        let exec = exec.strip_prefix(&["--".to_owned()]).unwrap_or(&exec);
        if let Some((program, args)) = exec.split_first() {
            list.push(Action::Exec(Exec {
                program: program.clone(),
                args: args.to_vec(),
            }));
        }
        let options = WebhookOptions {
            method: self.webhook_method.to_ascii_uppercase(),
            headers: self.webhook_header.clone(),
            timeout: self.webhook_timeout,
            accept: self.webhook_status_code.clone(),
            retries: self.webhook_retries,
        };
        for url in &self.webhook_url {
            list.push(Action::Webhook(Webhook::new(url, options.clone())?));
        }
        if let Some(signal) = &self.signal {
            let target = match (&self.pid, &self.pid_file) {
                (Some(pid), _) => PidSource::Pid(*pid),
                (None, Some(file)) => PidSource::File(file.clone()),
                (None, None) => return Err("--signal needs --pid or --pid-file".into()),
            };
            list.push(Action::Signal(SignalAction::new(signal, target)?));
        }
        Ok(Actions {
            list,
            on_start: self.on_start,
            shutdown_timeout: self.shutdown_timeout,
            dir: dir.to_owned(),
        })
    }
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

fn parse_size(s: &str) -> Result<u64, String> {
    match parse_size::parse_size(s) {
        Ok(0) => Err("must be greater than zero".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected e.g. 1MiB, 512KiB, 1048576)")),
    }
}

fn parse_level(s: &str) -> Result<LevelFilter, String> {
    s.parse()
        .map_err(|_| "expected one of off, error, warn, info, debug, trace".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn intervals_and_sizes_are_validated() {
        assert_eq!(parse_interval("5s"), Ok(Duration::from_secs(5)));
        assert!(parse_interval("0s").is_err());
        assert!(parse_interval("soon").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert_eq!(
            parse_size("16MiB"),
            Ok(configmapwatch::volume::DEFAULT_MAX_FILE_SIZE)
        );
    }
}
