//! `configmapwatch publish`: write or update a directory exactly as the
//! kubelet updates a ConfigMap volume, for dev hosts, demos and tests.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use configmapwatch::{AtomicWriter, Outcome, Payload, Swap};

/// How `..data` is switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SwapArg {
    /// rename(..data_tmp, ..data): atomic, as on Linux.
    Rename,
    /// Remove ..data, then create it: as the kubelet on Windows.
    Windows,
}

/// Options of `publish`; names follow `kubectl create configmap`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The volume directory to write (created if missing, as the kubelet
    /// creates the mount point).
    #[arg(short, long, env = "CONFIGMAPWATCH_DIR")]
    pub dir: PathBuf,

    /// A file (key: its name), a directory (each file in it), or KEY=PATH.
    #[arg(long, value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,

    /// A key and its value.
    #[arg(long, value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,

    /// How to swap ..data [default: this platform's kubelet's way].
    #[arg(long, value_enum)]
    pub swap: Option<SwapArg>,

    /// Every file's mode, in octal, as a volume's defaultMode (a Secret's
    /// keys are often 0600).
    #[arg(long, value_name = "MODE", default_value = "0644", value_parser = parse_mode)]
    pub default_mode: u32,

    /// One key's mode, as an item's mode: KEY=MODE (octal); repeatable.
    #[arg(long, value_name = "KEY=MODE", value_parser = parse_key_mode)]
    pub mode: Vec<(String, u32)>,

    /// Refuse a file larger than this (a ConfigMap holds at most 1 MiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = crate::cli::parse_size)]
    pub max_file_size: u64,

    /// First remove what a writer that died mid-write left: a stale
    /// ..data_tmp (which, as for the kubelet, blocks every write) and
    /// orphaned timestamped directories.
    #[arg(long)]
    pub repair: bool,
}

pub(crate) fn parse_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("{s:?} is not an octal mode such as 0644"))
}

fn parse_key_mode(s: &str) -> Result<(String, u32), String> {
    let (key, mode) = s
        .rsplit_once('=')
        .ok_or_else(|| "expected KEY=MODE, e.g. secret.json=0600".to_owned())?;
    Ok((key.to_owned(), parse_mode(mode)?))
}

impl PublishArgs {
    /// The payload to write, read from the named files and literals.
    pub fn payload(&self) -> configmapwatch::Result<Payload> {
        let mut payload = Payload::new();
        for spec in &self.from_file {
            payload.add_from_file(spec)?;
        }
        for spec in &self.from_literal {
            payload.add_from_literal(spec)?;
        }
        payload.set_default_mode(self.default_mode);
        for (key, mode) in &self.mode {
            if !payload.set_mode(key, *mode) {
                return Err(configmapwatch::Error::InvalidKey {
                    key: key.clone(),
                    reason: "--mode names a key the payload does not have",
                });
            }
        }
        Ok(payload)
    }

    /// The swap style asked for.
    pub fn swap(&self) -> Swap {
        match self.swap {
            None => Swap::default(),
            Some(SwapArg::Rename) => Swap::Rename,
            Some(SwapArg::Windows) => Swap::RemoveThenCreate,
        }
    }
}

/// Why `publish` failed: the command line (exit status 2, like every
/// usage error) or the writing itself (1).
#[derive(Debug)]
pub enum Failure {
    /// A key, file or option the command line names is refused.
    Usage(String),
    /// The volume could not be written.
    Write(String),
}

/// Runs `publish`, printing what it did.
pub fn run(args: &PublishArgs) -> Result<(), Failure> {
    let payload = args.payload().map_err(|e| Failure::Usage(e.chain()))?;
    if let Some((key, size)) = payload
        .largest()
        .filter(|(_, n)| *n as u64 > args.max_file_size)
    {
        return Err(Failure::Usage(format!(
            "key {key} is {size} bytes, over the {}-byte limit (--max-file-size)",
            args.max_file_size
        )));
    }
    write(args, &payload).map_err(Failure::Write)
}

fn write(args: &PublishArgs, payload: &Payload) -> Result<(), String> {
    if !args.dir.exists() {
        // The kubelet creates the mount point before writing.
        std::fs::create_dir_all(&args.dir)
            .map_err(|e| format!("{}: cannot create: {e}", args.dir.display()))?;
        eprintln!("configmapwatch: created {}", args.dir.display());
    }
    let writer = AtomicWriter::new(&args.dir).with_swap(args.swap());
    if args.repair {
        let removed = writer.repair().map_err(|e| e.chain())?;
        if removed.is_empty() {
            eprintln!("configmapwatch: repair: nothing to remove");
        } else {
            eprintln!("configmapwatch: repair: removed {}", removed.join(", "));
        }
    }
    match writer.write(payload).map_err(|e| e.chain())? {
        Outcome::Written { version, previous } => match previous {
            Some(previous) => println!("published {version} (replacing {previous})"),
            None => println!("published {version}"),
        },
        Outcome::Unchanged { version } => {
            println!("unchanged: {version} already holds this payload")
        }
        Outcome::Interrupted { .. } => unreachable!("no hook stops this writer"),
    }
    Ok(())
}
