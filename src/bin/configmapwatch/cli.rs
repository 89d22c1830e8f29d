//! The command line (clap derive). Doc comments are the help text. Parsed
//! arguments are turned into the library's validated [`Settings`]; clap
//! types stay on this side.

use std::{path::PathBuf, time::Duration};

use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand, ValueEnum, builder::BoolishValueParser};
use configmapwatch::{
    Format, LayoutMode, OutputFormat, Selector, WatchOptions, YamlSchema,
    actions::{
        Action, Actions, Confirm, Exec, PidSource, SecretKind, Secrets, SignalAction, TlsVerify,
        ValidateExec, Webhook, WebhookOptions, parse_header,
    },
    jitter::Jitter,
    render::{EnvAllow, EnvMode},
};

use crate::watch::{Checks, Print, Render, RenderTarget, Settings};
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
    /// own consistent snapshot on the same tick. The variable takes a
    /// comma-separated list.
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

    /// Read plain YAML scalars by YAML 1.1's types instead of YAML 1.2's
    /// core schema: `no`, `yes`, `on`, `off`, `y`, `n` become booleans
    /// (`country: no`, Norway, becomes false) and `0755` octal. For
    /// consumers of the JSON that expect YAML 1.1 (PyYAML, go-yaml v2).
    #[arg(long = "yaml-1-1", env = "CONFIGMAPWATCH_YAML_1_1", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub yaml_1_1: bool,

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

    /// How the directory is read. auto: through ..data while it is a
    /// symlink; as plain files under ..data while it is a directory (a
    /// filesystem that hides symlinks: SMB, some FUSE mounts, Wine); as
    /// plain files without ..data. configmap: only through a ..data
    /// symlink, never plain files. plain: always plain files, under ..data
    /// (a directory or a symlink, followed) when it exists.
    #[arg(long, value_enum, value_name = "LAYOUT", env = "CONFIGMAPWATCH_LAYOUT",
          default_value_t = LayoutArg::Auto)]
    pub layout: LayoutArg,

    /// How long a passing fault reading a new version (permission denied,
    /// EIO, a checker that cannot start) is retried quietly, with backoff,
    /// before it is also an error event naming the key and the cause. It
    /// is still retried; its recovery is a change event.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_FAULT_GRACE", default_value = "3s",
          value_parser = parse_interval)]
    pub fault_grace: Duration,

    #[command(flatten)]
    pub checks: CheckArgs,

    #[command(flatten)]
    pub serve: ServeArgs,

    #[command(flatten)]
    pub actions: ActionArgs,
}

/// What a new version must pass, and where it is written, before actions.
#[derive(Debug, Args)]
#[command(next_help_heading = "Validation and rendering (before any action)")]
pub struct CheckArgs {
    /// Run the target's own checker on each new version before accepting
    /// it, e.g. 'promtool check config {}' or 'nginx -t -c {}' (one quoted
    /// string, split as a shell would). `{}` is the path of the selected
    /// key's file in the version's data directory (the directory itself
    /// with several keys or --all-keys). A non-zero exit refuses the
    /// version with the checker's output; the last good config stays.
    #[arg(long, value_name = "COMMAND", env = "CONFIGMAPWATCH_VALIDATE_EXEC")]
    pub validate_exec: Option<String>,

    /// Kill a checker still running after this; the version is refused.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_VALIDATE_TIMEOUT", default_value = "30s",
          value_parser = parse_interval)]
    pub validate_timeout: Duration,

    /// Write the selected key (one --file) to this plain file, atomically,
    /// after validation and before actions: for programs that read one
    /// file, not a ..data tree. Its original format, not JSON.
    #[arg(
        long,
        value_name = "PATH",
        env = "CONFIGMAPWATCH_RENDER_TO",
        conflicts_with = "render_dir"
    )]
    pub render_to: Option<PathBuf>,

    /// Write every selected key into this existing directory, each file
    /// atomically; files a previous render wrote that are no longer keys
    /// are removed (never others).
    #[arg(long, value_name = "DIR", env = "CONFIGMAPWATCH_RENDER_DIR")]
    pub render_dir: Option<PathBuf>,

    /// The mode of rendered files, in octal (e.g. 0640). By default each
    /// file gets the mode of the key it comes from (a Secret's 0400 key
    /// stays 0400), never a wider one.
    #[arg(long, value_name = "MODE", env = "CONFIGMAPWATCH_RENDER_MODE",
          value_parser = crate::publish::parse_mode)]
    pub render_mode: Option<u32>,

    /// Replace $(VAR) and ${VAR} in what is rendered with these
    /// environment variables: names and prefixes, comma-separated
    /// (APP_*,DB_HOST). A reference to an unset variable, or to one not
    /// listed, refuses the version ($$(VAR) is a literal $(VAR)). The
    /// tool's own CONFIGMAPWATCH_* variables are never substituted.
    #[arg(long, value_name = "NAMES", env = "CONFIGMAPWATCH_RENDER_ENV_ALLOW")]
    pub render_env_allow: Option<String>,

    /// Substitute the environment in what is rendered: needs
    /// --render-env-allow, which says which variables.
    #[arg(long, env = "CONFIGMAPWATCH_RENDER_ENV", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub render_env: bool,

    /// With --render-env-allow: leave unset (or unlisted) variables as they
    /// are (counted in the log) instead of refusing the version.
    #[arg(long, env = "CONFIGMAPWATCH_RENDER_ENV_TOLERANT", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub render_env_tolerant: bool,
}

/// The sidecar's HTTP endpoints.
#[derive(Debug, Args)]
#[command(next_help_heading = "Metrics and health (off unless --listen-address is given)")]
pub struct ServeArgs {
    /// Serve /metrics (Prometheus), /healthz (the loop is ticking), /readyz
    /// (every directory has a valid config, no reload failing) and /status
    /// (JSON) on this address, e.g.
    /// 127.0.0.1:9533, or :9533 for every interface.
    #[arg(long, value_name = "ADDR", env = "CONFIGMAPWATCH_LISTEN_ADDRESS")]
    pub listen_address: Option<String>,
    /// /readyz fails also while a directory's newest version is refused
    /// (invalid, or unreadable past --fault-grace), although the last good
    /// config still serves. Off: such a pod stays in its Service.
    #[arg(long, env = "CONFIGMAPWATCH_READY_REQUIRES_LATEST", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub ready_requires_latest: bool,
}

/// What to do on each good change.
#[derive(Debug, Args)]
#[command(next_help_heading = "Actions (run for each good change, never for an invalid one)",
          group(ArgGroup::new("pid_source").args(["pid", "pid_file", "process_name"])))]
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

    /// The process to signal, found by name at each change (its comm or
    /// executable, in a shared process namespace; the top of a tree of
    /// same-named processes, e.g. nginx's master). None or several are an
    /// error naming what was found. Linux only.
    #[arg(
        long,
        value_name = "NAME",
        env = "CONFIGMAPWATCH_PROCESS_NAME",
        requires = "signal"
    )]
    pub process_name: Option<String>,

    /// Wait a random time up to this before acting on a change, so that a
    /// fleet of replicas does not reload at once. A newer version arriving
    /// meanwhile replaces the waiting one.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_JITTER", value_parser = parse_interval)]
    pub jitter: Option<Duration>,

    /// With --jitter: a stable offset per replica, from the StatefulSet
    /// ordinal in POD_NAME (web-3 -> 3), spread over the window.
    #[arg(long, env = "CONFIGMAPWATCH_JITTER_FROM_ORDINAL", requires = "jitter",
          value_parser = boolish(), action = ArgAction::SetTrue)]
    pub jitter_from_ordinal: bool,

    /// After the actions, poll this URL (GET, JSON) until it shows the new
    /// config took: the success flag true and the reload time not older
    /// than the round (Prometheus: /api/v1/status/runtimeinfo). A round
    /// not confirmed within --confirm-timeout failed.
    #[arg(long, value_name = "URL", env = "CONFIGMAPWATCH_CONFIRM_URL")]
    pub confirm_url: Option<String>,

    /// JSON pointer to the success flag in the --confirm-url answer
    /// (checked when present).
    #[arg(
        long,
        value_name = "POINTER",
        env = "CONFIGMAPWATCH_CONFIRM_SUCCESS_POINTER",
        default_value = "/data/reloadConfigSuccess"
    )]
    pub confirm_success_pointer: String,

    /// JSON pointer to the last reload time (RFC 3339, UTC) in the
    /// --confirm-url answer (checked when present).
    #[arg(
        long,
        value_name = "POINTER",
        env = "CONFIGMAPWATCH_CONFIRM_TIME_POINTER",
        default_value = "/data/lastConfigTime"
    )]
    pub confirm_time_pointer: String,

    /// After the actions, run this command (one quoted string, split as a
    /// shell would; the config on its stdin): exit 0 confirms the round.
    #[arg(
        long,
        value_name = "COMMAND",
        env = "CONFIGMAPWATCH_CONFIRM_EXEC",
        conflicts_with = "confirm_url"
    )]
    pub confirm_exec: Option<String>,

    /// How long a confirmation may take.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_CONFIRM_TIMEOUT", default_value = "30s",
          value_parser = parse_interval)]
    pub confirm_timeout: Duration,

    /// A failed round (an action or the confirmation) is retried, the
    /// config unchanged, with backoff from 500ms up to this, until it
    /// succeeds or a newer version arrives.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_ROUND_RETRY_MAX", default_value = "1m",
          value_parser = parse_interval)]
    pub round_retry_max: Duration,

    /// Do not retry a failed round: wait for the next version.
    #[arg(long, env = "CONFIGMAPWATCH_NO_ROUND_RETRY", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub no_round_retry: bool,

    /// Also run the actions for the initial config.
    #[arg(long, env = "CONFIGMAPWATCH_ON_START", value_parser = boolish(), action = ArgAction::SetTrue)]
    pub on_start: bool,

    /// On SIGTERM, running commands and checkers are stopped at once
    /// (SIGTERM to their process group) and reported as interrupted; an
    /// HTTP request in flight is waited for this long, then left.
    #[arg(long, value_name = "DURATION", env = "CONFIGMAPWATCH_SHUTDOWN_TIMEOUT", default_value = "800ms",
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

/// `--layout`: the library's [`LayoutMode`], as a command-line value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    /// Follow what ..data is.
    Auto,
    /// Only a ..data symlink (a ConfigMap volume).
    #[value(name = "configmap")]
    ConfigMap,
    /// Always plain files.
    Plain,
}

impl From<LayoutArg> for LayoutMode {
    fn from(arg: LayoutArg) -> Self {
        match arg {
            LayoutArg::Auto => LayoutMode::Auto,
            LayoutArg::ConfigMap => LayoutMode::ConfigMap,
            LayoutArg::Plain => LayoutMode::Plain,
        }
    }
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
        let selector = if self.all_keys {
            Selector::all_keys()
        } else {
            Selector::keys(self.file.iter().cloned())
        };
        let template = WatchOptions::new(PathBuf::new())
            .with_selector(
                match self.format {
                    Some(format) => selector.with_format(format),
                    None => selector,
                }
                // A gzip key's text is held to the same cap as a file's.
                .with_max_decompressed(self.max_file_size)
                .with_yaml_schema(if self.yaml_1_1 {
                    YamlSchema::Yaml11
                } else {
                    YamlSchema::Core
                }),
            )
            .with_interval(self.interval)
            .with_max_file_size(self.max_file_size)
            .with_max_total_size(self.max_total_size)
            .with_layout(self.layout.into())
            .with_fault_grace(self.fault_grace);
        let secrets = self.actions.secrets();
        Ok(Settings {
            watches: self
                .dir
                .iter()
                .map(|dir| template.clone().with_dir(dir.clone()))
                .collect(),
            output: match self.output {
                Output::Text => Print::Events(OutputFormat::Text),
                Output::Json => Print::Events(OutputFormat::Json),
                Output::Config => Print::Config,
            },
            actions: self.actions.actions(&self.dir[0], &secrets)?,
            listen: self.serve.listen_address.clone(),
            ready_requires_latest: self.serve.ready_requires_latest,
            checks: self
                .checks
                .checks(&self.dir, &template.selector, &secrets)?,
        })
    }
}

impl CheckArgs {
    fn checks(
        &self,
        dirs: &[PathBuf],
        selector: &Selector,
        secrets: &Secrets,
    ) -> Result<Checks, String> {
        let validate = match &self.validate_exec {
            None => None,
            Some(line) => {
                let (program, args) = command_line("--validate-exec", line)?;
                Some(
                    ValidateExec::new(
                        program,
                        args,
                        selector.single_key().map(str::to_owned),
                        self.validate_timeout,
                    )
                    // A checker running when SIGTERM comes is stopped: the
                    // pod's grace period is not spent waiting for it.
                    .with_cancel(crate::signals::pending)
                    // Its refusal is printed as an event: secrets hidden.
                    .with_secrets(secrets.values().to_vec()),
                )
            }
        };
        let target = match (&self.render_to, &self.render_dir) {
            (Some(file), _) => {
                if selector.single_key().is_none() {
                    return Err(
                        "--render-to writes one key: select it with one --file (or use --render-dir)"
                            .into(),
                    );
                }
                Some(RenderTarget::File(file.clone()))
            }
            (None, Some(dir)) => {
                if !dir.is_dir() {
                    return Err(format!(
                        "--render-dir {}: not an existing directory",
                        dir.display()
                    ));
                }
                Some(RenderTarget::Dir(dir.clone()))
            }
            (None, None) => None,
        };
        if target.is_some() && dirs.len() > 1 {
            return Err("--render-to and --render-dir take one --dir".into());
        }
        let asked = self.render_env || self.render_env_tolerant || self.render_env_allow.is_some();
        if target.is_none() && (asked || self.render_mode.is_some()) {
            return Err(
                "--render-env, --render-env-allow and --render-mode need --render-to or --render-dir"
                    .into(),
            );
        }
        // Which variables, always said: the environment holds the tool's
        // own credentials and whatever else the pod was given.
        let allow = match &self.render_env_allow {
            Some(list) => {
                Some(EnvAllow::parse(list).map_err(|e| format!("--render-env-allow: {e}"))?)
            }
            None if asked => {
                return Err("--render-env substitutes only the variables named in \
                     --render-env-allow (names or prefixes, e.g. APP_*,DB_HOST): give it"
                    .into());
            }
            None => None,
        };
        let env = allow.map(|allow| {
            let mode = match self.render_env_tolerant {
                true => EnvMode::Tolerant,
                false => EnvMode::Strict,
            };
            (mode, allow)
        });
        Ok(Checks {
            validate,
            render: target.map(|target| Render {
                target,
                env,
                mode: self.render_mode,
            }),
        })
    }
}

impl ActionArgs {
    /// The webhook URLs: the flags, or the variable split on commas. Only
    /// the variable is split: on the command line, `?ids=1,2` is part of
    /// one URL.
    fn webhook_urls(&self) -> Vec<String> {
        match (
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
        }
    }

    /// The values of every secret-bearing setting given (the registry's,
    /// [`configmapwatch::actions::SECRET_SETTINGS`]), to be hidden in what
    /// any command we start writes.
    fn secrets(&self) -> Secrets {
        let mut secrets = Secrets::default();
        for url in self.webhook_urls().iter().chain(&self.confirm_url) {
            secrets.add(SecretKind::Url, url);
        }
        for (name, value) in &self.webhook_header {
            secrets.add(SecretKind::Header, &format!("{name}: {value}"));
        }
        secrets
    }

    fn actions(&self, dir: &std::path::Path, secrets: &Secrets) -> Result<Actions, String> {
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
        let urls = self.webhook_urls();
        if self.webhook_insecure_skip_verify && urls.iter().any(|u| u.starts_with("https://")) {
            log::warn!(
                "--webhook-insecure-skip-verify: https webhook servers are not verified; anyone on the path can read and change the requests"
            );
        }
        for url in &urls {
            list.push(Action::Webhook(Webhook::new(url, options.clone())?));
        }
        if let Some(Action::Exec(exec)) = list.get_mut(exec_at) {
            exec.secrets = secrets.values().to_vec();
        }
        if let Some(signal) = &self.signal {
            let target = match (&self.pid, &self.pid_file, &self.process_name) {
                (Some(pid), _, _) => PidSource::Pid(*pid),
                (None, Some(file), _) => PidSource::File(file.clone()),
                (None, None, Some(name)) => PidSource::Name(name.clone()),
                (None, None, None) => {
                    return Err("--signal needs --pid, --pid-file or --process-name".into());
                }
            };
            list.push(Action::Signal(SignalAction::new(signal, target)?));
        }
        let confirm = match (&self.confirm_url, &self.confirm_exec) {
            (Some(url), _) => Some(Confirm::url(
                url,
                &self.confirm_success_pointer,
                &self.confirm_time_pointer,
                self.confirm_timeout,
                WebhookOptions {
                    // Webhook headers may carry credentials for another host.
                    headers: Vec::new(),
                    ..options.clone()
                },
            )?),
            (None, Some(line)) => {
                let (program, args) = command_line("--confirm-exec", line)?;
                let mut exec = Exec::new(program, args);
                exec.timeout = self.confirm_timeout;
                exec.secrets = secrets.values().to_vec();
                Some(Confirm::Exec(exec))
            }
            (None, None) => None,
        };
        if let Some(confirm) = confirm {
            if list.is_empty() {
                return Err("--confirm-url and --confirm-exec confirm actions: give one".into());
            }
            list.push(Action::Confirm(confirm));
        }
        let jitter = match (self.jitter, self.jitter_from_ordinal) {
            (None, _) => Jitter::None,
            (Some(max), false) => Jitter::random(max),
            (Some(max), true) => Jitter::from_env("POD_NAME", max)
                .map_err(|e| format!("--jitter-from-ordinal: {e}"))?,
        };
        Ok(Actions {
            list,
            on_start: self.on_start,
            shutdown_timeout: self.shutdown_timeout,
            dir: dir.to_owned(),
            jitter,
            retry: (!self.no_round_retry).then_some(self.round_retry_max),
        })
    }
}

/// A command given as one string (`'nginx -t -c {}'`), split as a shell
/// would: its program and arguments.
fn command_line(flag: &str, line: &str) -> Result<(String, Vec<String>), String> {
    let mut words = shell_words::split(line).map_err(|e| format!("{flag}: {e}"))?;
    if words.is_empty() {
        return Err(format!("{flag} needs a command"));
    }
    let program = words.remove(0);
    Ok((program, words))
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
