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
    /// The volume directory to write (created if missing).
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

/// Runs `publish`, printing what it did.
pub fn run(args: &PublishArgs) -> Result<(), String> {
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
    Ok(())
}
