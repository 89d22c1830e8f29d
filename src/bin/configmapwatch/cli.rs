//! The command line (clap derive). Doc comments are the help text. Parsed
//! arguments are turned into the library's validated [`Settings`]; clap
//! types stay on this side.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum, builder::BoolishValueParser};
use configmapwatch::{
    Format, OutputFormat, Selector, WatchOptions,
    actions::{
        Action, Actions, Exec, PidSource, SignalAction, TlsVerify, Webhook, WebhookOptions,
        parse_header,
    },
};

use crate::watch::{Print, Settings};
use log::LevelFilter;

const EXAMPLES: &str = "\
Examples:
  Watch a mounted ConfigMap, printing the config and each change:
    configmapwatch --dir /opt/config --interval 5s

  Print every key as one JSON object per event, for a script:
    configmapwatch -d /etc/app --all-keys --output json

  Reload Prometheus, retrying until it answers 2xx:
    configmapwatch -d /etc/prometheus --all-keys --webhook-url http://127.0.0.1:9090/-/reload

  Reload nginx in another container (shareProcessNamespace: true):
    configmapwatch -d /etc/nginx/conf.d --all-keys --signal HUP --pid-file /var/run/nginx.pid

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
    // An explicit heading: the Actions heading set by the flattened
    // ActionArgs would otherwise carry over to this global option.
    #[arg(short = 'l', long, env = "CONFIGMAPWATCH_LOG", default_value = "info", global = true,
          value_parser = parse_level, help_heading = "Logging")]
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
    /// The mounted volume directory; repeatable (e.g. a config ConfigMap, a
    /// rules ConfigMap and a Secret feeding one reload). Each is read as its
    /// own consistent snapshot on the same tick. [env: comma-separated]
    #[arg(
        short,
        long,
        value_name = "DIR",
        env = "CONFIGMAPWATCH_DIR",
        default_value = "/opt/config",
        value_delimiter = ','
    )]
    pub dir: Vec<PathBuf>,

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
    #[arg(long, env = "CONFIGMAPWATCH_ALL_KEYS", conflicts_with = "file", value_parser = boolish(), action = ArgAction::SetTrue)]
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

    /// Print the current config and exit: 0 if valid, 1 if missing or
    /// invalid. With --on-start, also run the actions once on it and exit
    /// with their result (an init container).
    #[arg(long, env = "CONFIGMAPWATCH_ONCE", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub once: bool,

    /// Refuse files larger than this, e.g. 1MiB (a ConfigMap holds at most 1 MiB).
    #[arg(long, value_name = "SIZE", env = "CONFIGMAPWATCH_MAX_FILE_SIZE",
          default_value = "16MiB", value_parser = parse_size)]
    pub max_file_size: u64,

    /// Refuse a version whose keys read add up to more than this.
    #[arg(long, value_name = "SIZE", env = "CONFIGMAPWATCH_MAX_TOTAL_SIZE",
          default_value = "64MiB", value_parser = parse_size)]
    pub max_total_size: u64,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub actions: ActionArgs,
}

/// The sidecar's HTTP endpoints.
#[derive(Debug, Args)]
#[command(next_help_heading = "Metrics and health (off unless --listen-address is given)")]
pub struct ServeArgs {
    /// Serve /metrics (Prometheus), /healthz (the loop is ticking) and
    /// /readyz (every directory has a valid config) on this address, e.g.
    /// 127.0.0.1:9533, or :9533 for every interface.
    #[arg(long, value_name = "ADDR", env = "CONFIGMAPWATCH_LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
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

    /// Send the event (as --output json) to this URL; repeatable. http:// or
    /// https:// (verified against Mozilla's roots, bundled, or
    /// --webhook-ca-file). [env: CONFIGMAPWATCH_WEBHOOK_URL,
    /// comma-separated; on the command line a comma is part of the URL]
    #[arg(long, value_name = "URL")]
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

    /// Verify https:// webhooks against the CA certificates in this PEM
    /// file instead of the public roots (e.g. a cluster's own CA).
    #[arg(long, value_name = "PATH", env = "CONFIGMAPWATCH_WEBHOOK_CA_FILE")]
    pub webhook_ca_file: Option<PathBuf>,

    /// Do not verify https:// webhook servers at all (a test setup only:
    /// anyone on the path can read and change the request).
    #[arg(long, env = "CONFIGMAPWATCH_WEBHOOK_INSECURE_SKIP_VERIFY", conflicts_with = "webhook_ca_file",
          value_parser = boolish(), action = ArgAction::SetTrue)]
    pub webhook_insecure_skip_verify: bool,

    /// Retries after a failed webhook attempt (capped exponential backoff with jitter).
    #[arg(
        long,
        value_name = "N",
        env = "CONFIGMAPWATCH_WEBHOOK_RETRIES",
        default_value_t = 5
    )]
    pub webhook_retries: u32,

    /// Kill a command still running after this (with every process it
    /// started) and report the round failed; the next round runs.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_EXEC_TIMEOUT", default_value = "30s",
          value_parser = parse_interval)]
    pub exec_timeout: Duration,

    /// Send this signal (HUP, USR1, USR2, TERM, ...) to the process given by
    /// --pid or --pid-file. Unix only.
    #[arg(
        long,
        value_name = "SIGNAL",
        env = "CONFIGMAPWATCH_SIGNAL",
        requires = "pid_source"
    )]
    pub signal: Option<String>,

    /// The process to signal (a positive process id).
    #[arg(
        long,
        value_name = "PID",
        env = "CONFIGMAPWATCH_PID",
        requires = "signal",
        value_parser = clap::value_parser!(u32).range(1..=i32::MAX as i64)
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
    #[arg(long, env = "CONFIGMAPWATCH_ON_START", value_parser = boolish(), action = ArgAction::SetTrue)]
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
    /// The config alone: pretty JSON with --once (for `| jq`), one compact
    /// line per good config otherwise. Errors go to stderr only.
    Config,
}

impl WatchArgs {
    /// The validated settings the library runs with; an error is a usage
    /// error.
    pub fn settings(&self) -> Result<Settings, String> {
        if self.dir.is_empty() {
            return Err("--dir needs a directory".into());
        }
        for (i, dir) in self.dir.iter().enumerate() {
            if self.dir[..i].contains(dir) {
                return Err(format!("--dir {} is given twice", dir.display()));
            }
        }
        let template = WatchOptions {
            dir: PathBuf::new(),
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
            max_total_size: self.max_total_size,
        };
        Ok(Settings {
            watches: self
                .dir
                .iter()
                .map(|dir| WatchOptions {
                    dir: dir.clone(),
                    ..template.clone()
                })
                .collect(),
            output: match self.output {
                Output::Text => Print::Events(OutputFormat::Text),
                Output::Json => Print::Events(OutputFormat::Json),
                Output::Config => Print::Config,
            },
            actions: self.actions.actions(&self.dir[0])?,
            listen: self.serve.listen_address.clone(),
        })
    }
}

impl ActionArgs {
    fn actions(&self, dir: &std::path::Path) -> Result<Actions, String> {
        let mut list = Vec::new();
        let exec = match (self.exec.is_empty(), std::env::var("CONFIGMAPWATCH_EXEC")) {
            // Split as a shell would: `sh -c 'echo hi'` is three words.
            (true, Ok(line)) => {
                shell_words::split(&line).map_err(|e| format!("CONFIGMAPWATCH_EXEC: {e}"))?
            }
            _ => self.exec.clone(),
        };
        // `--exec -- prog args` is as natural as `--exec prog args`.
        let exec = exec.strip_prefix(&["--".to_owned()]).unwrap_or(&exec);
        warn_on_our_flags(exec.get(1..).unwrap_or_default());
        let exec_at = list.len();
        if let Some((program, args)) = exec.split_first() {
            let mut exec = Exec::new(program.clone(), args.to_vec());
            exec.timeout = self.exec_timeout;
            list.push(Action::Exec(exec));
        }
        let options = WebhookOptions {
            method: self.webhook_method.to_ascii_uppercase(),
            headers: self.webhook_header.clone(),
            timeout: self.webhook_timeout,
            accept: self.webhook_status_code.clone(),
            retries: self.webhook_retries,
            tls: match (&self.webhook_ca_file, self.webhook_insecure_skip_verify) {
                (_, true) => TlsVerify::InsecureSkipVerify,
                (Some(file), false) => TlsVerify::CaFile(file.clone()),
                (None, false) => TlsVerify::PublicRoots,
            },
        };
        // Only the environment variable is split on commas: on the command
        // line, `?ids=1,2` is part of one URL.
        let urls = match (
            self.webhook_url.is_empty(),
            std::env::var("CONFIGMAPWATCH_WEBHOOK_URL"),
        ) {
            (true, Ok(list)) => list
                .split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => self.webhook_url.clone(),
        };
        if self.webhook_insecure_skip_verify && urls.iter().any(|u| u.starts_with("https://")) {
            log::warn!(
                "--webhook-insecure-skip-verify: https webhook servers are not verified; anyone on the path can read and change the requests"
            );
        }
        let mut secrets = Vec::new();
        for url in &urls {
            let hook = Webhook::new(url, options.clone())?;
            secrets.extend(hook.secrets());
            list.push(Action::Webhook(hook));
        }
        if let Some(Action::Exec(exec)) = list.get_mut(exec_at) {
            exec.secrets = secrets;
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

/// Every argument after `--exec` belongs to the command: one that is one
/// of our own flags was most likely meant for us.
fn warn_on_our_flags(args: &[String]) {
    use clap::CommandFactory;
    let ours = Cli::command();
    for arg in args {
        let Some(name) = arg.strip_prefix("--") else {
            continue;
        };
        let name = name.split('=').next().unwrap_or(name);
        if ours.get_arguments().any(|a| a.get_long() == Some(name)) {
            log::warn!(
                "--exec: {arg} is passed to the command, not to configmapwatch (everything after --exec is the command's); put --exec last"
            );
        }
    }
}

/// The longest duration any option takes: a day. Longer ones are mistakes,
/// and would overflow deadlines computed from them.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

fn parse_interval(s: &str) -> Result<Duration, String> {
    let d =
        humantime::parse_duration(s).map_err(|e| format!("{e} (expected e.g. 500ms, 5s, 1m)"))?;
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    if d > MAX_DURATION {
        return Err("must be at most 24h".into());
    }
    Ok(d)
}

/// Booleans from the environment: 1/0, true/false, yes/no, on/off.
fn boolish() -> BoolishValueParser {
    BoolishValueParser::new()
}

pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
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
        assert!(parse_interval("25h").is_err());
        assert!(parse_interval("500000000000years").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("0").is_err());
        assert_eq!(
            parse_size("16MiB"),
            Ok(configmapwatch::volume::DEFAULT_MAX_FILE_SIZE)
        );
    }
}
