//! Reading a mounted volume: telling a ConfigMap volume (one with `..data`)
//! from a plain directory, and taking consistent snapshots of either.
//!
//! A ConfigMap snapshot is read the only safe way: `readlink(..data)` gives
//! the data directory `T`; every key is read under `<dir>/T/`; `..data` is
//! read again. If it moved, or a read found a file gone (the kubelet deletes
//! the old directory right after the swap), the read starts over. So a
//! snapshot never mixes two versions.

mod files;
mod link;

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

pub use files::Entries;
pub(crate) use files::{Fingerprint, fingerprints};
pub(crate) use link::{DataLink, LinkRead, check_target};

use crate::{Error, Result};
pub(crate) use files::WalkError;
pub(crate) use files::read_tree;

/// How many times a consistent read is tried before giving up for this tick.
pub const READ_ATTEMPTS: u32 = 8;

/// Default per-file cap: 16 MiB (a ConfigMap holds at most 1 MiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;

/// What kind of directory a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Has a `..data` link: written by the kubelet (or `publish`).
    ConfigMap,
    /// A directory without `..data`: a dev host, a hostPath or a subPath
    /// mount.
    Plain,
    /// The directory does not exist.
    Missing,
}

/// The points inside a consistent read at which
/// [`Volume::read_configmap_with_hook`] calls its hook: where a writer
/// running at the same moment could interleave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStep {
    /// `..data` has been read and validated; nothing else yet.
    TargetRead,
    /// One key has been read (or refused).
    KeyRead,
    /// Every key has been read; `..data` is about to be read again.
    Verifying,
}

/// One consistent version of a volume.
#[derive(Debug)]
pub struct Snapshot {
    /// The `..data` target in ConfigMap mode; a content hash
    /// (`plain-<16 hex digits>`) in plain mode.
    pub version: String,
    /// The layout it was read from.
    pub layout: Layout,
    /// When `..data` was swapped to this version (the mtime of the `..data`
    /// symlink); `None` in plain mode.
    pub swapped_at: Option<SystemTime>,
    /// When the reader first saw this version: the `readlink` that began
    /// the attempt that read it. A read that restarts because the volume
    /// moved on lands on a newer version than the one that was first
    /// noticed; detection time and lag belong to the version read.
    pub seen_at: SystemTime,
    /// Every key and its content, or why it was refused.
    pub entries: Entries,
}

impl Snapshot {
    /// The content of `key`: `None` if absent, `Some(Err)` if refused.
    pub fn get(&self, key: &str) -> Option<Result<&[u8], &Error>> {
        self.entries.get(key).map(|r| r.as_deref())
    }
}

/// A volume directory to read from.
#[derive(Debug)]
pub struct Volume {
    dir: PathBuf,
    max_file_size: u64,
    link: DataLink,
}

impl Volume {
    /// A volume at `dir`, refusing files larger than `max_file_size` bytes.
    pub fn new(dir: impl Into<PathBuf>, max_file_size: u64) -> Self {
        let dir = dir.into();
        Volume {
            link: DataLink::new(&dir),
            dir,
            max_file_size,
        }
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks at the directory to tell its layout.
    pub fn layout(&mut self) -> Layout {
        match self.link.read() {
            Ok(LinkRead::Missing) | Err(_) => {}
            Ok(_) => return Layout::ConfigMap,
        }
        if self.dir.is_dir() {
            Layout::Plain
        } else {
            Layout::Missing
        }
    }

    /// Reads a snapshot in whatever layout the directory has now.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        match self.layout() {
            Layout::ConfigMap => self.read_configmap(),
            Layout::Plain => self.read_plain(),
            Layout::Missing => Err(Error::DirMissing {
                path: self.dir.clone(),
            }),
        }
    }

    pub(crate) fn data_link(&mut self) -> &mut DataLink {
        &mut self.link
    }

    /// Reads a consistent ConfigMap snapshot through `..data`.
    pub fn read_configmap(&mut self) -> Result<Snapshot> {
        self.read_configmap_with_hook(&mut |_| {})
    }

    /// [`read_configmap`](Self::read_configmap), calling `hook` at each
    /// [`ReadStep`]: tests use it to run a writer's steps in between and
    /// check every interleaving.
    pub fn read_configmap_with_hook(&mut self, hook: &mut dyn FnMut(ReadStep)) -> Result<Snapshot> {
        let link_path = self.dir.join("..data");
        for _ in 0..READ_ATTEMPTS {
            let seen_at = SystemTime::now();
            let target = match self.read_target(&link_path)? {
                Some(t) => t,
                None => {
                    return Err(Error::DataLinkMissing {
                        path: link_path.clone(),
                    });
                }
            };
            // The link's mtime is its creation time: microseconds before the
            // rename that made it `..data`. If another swap slips in between
            // the readlink and this lstat, the second readlink sees it.
            let swapped_at = fs::symlink_metadata(&link_path)
                .and_then(|m| m.modified())
                .ok();
            hook(ReadStep::TargetRead);
            let data_dir = self.dir.join(&target);
            match fs::symlink_metadata(&data_dir) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(bad_target(
                        &link_path,
                        &target,
                        "is a symlink, not a data directory",
                    ));
                }
                Ok(m) if !m.is_dir() => {
                    return Err(bad_target(&link_path, &target, "is not a directory"));
                }
                Ok(_) => {}
                Err(_) => {
                    if self.read_target(&link_path)?.as_deref() == Some(target.as_str()) {
                        return Err(bad_target(
                            &link_path,
                            &target,
                            "points to a missing directory",
                        ));
                    }
                    continue;
                }
            }
            let entries = match read_tree(&data_dir, self.max_file_size, &mut || {
                hook(ReadStep::KeyRead)
            }) {
                Ok(entries) => entries,
                Err(WalkError::Vanished) => continue,
                Err(WalkError::Fatal(e)) => return Err(e),
            };
            hook(ReadStep::Verifying);
            if self.read_target(&link_path)?.as_deref() != Some(target.as_str()) {
                continue;
            }
            return Ok(Snapshot {
                version: target,
                layout: Layout::ConfigMap,
                swapped_at,
                seen_at,
                entries,
            });
        }
        Err(Error::Unstable {
            path: self.dir.clone(),
            attempts: READ_ATTEMPTS,
        })
    }

    /// The validated target, `None` if `..data` is missing.
    fn read_target(&mut self, link_path: &Path) -> Result<Option<String>> {
        let bytes = match self.link.read() {
            Ok(LinkRead::Target(t)) => t,
            Ok(LinkRead::Missing) => return Ok(None),
            Ok(LinkRead::NotALink) => {
                return Err(bad_target(link_path, "", "..data is not a symlink"));
            }
            Ok(LinkRead::TooLong) => {
                return Err(bad_target(
                    link_path,
                    "(over 255 bytes)",
                    "too long for a data directory name",
                ));
            }
            Err(e) => return Err(Error::io(link_path, "cannot read link", e)),
        };
        match check_target(bytes) {
            Ok(t) => Ok(Some(t.to_owned())),
            Err(reason) => Err(bad_target(
                link_path,
                &String::from_utf8_lossy(bytes),
                reason,
            )),
        }
    }

    /// Reads a plain directory: every regular file below it, with a content
    /// hash as the version.
    pub fn read_plain(&mut self) -> Result<Snapshot> {
        for _ in 0..READ_ATTEMPTS {
            match read_tree(&self.dir, self.max_file_size, &mut || {}) {
                Ok(entries) => {
                    return Ok(Snapshot {
                        version: plain_version(&entries),
                        layout: Layout::Plain,
                        swapped_at: None,
                        seen_at: SystemTime::now(),
                        entries,
                    });
                }
                Err(WalkError::Vanished) if !self.dir.is_dir() => {
                    return Err(Error::DirMissing {
                        path: self.dir.clone(),
                    });
                }
                Err(WalkError::Vanished) => continue,
                Err(WalkError::Fatal(e)) => return Err(e),
            }
        }
        Err(Error::Unstable {
            path: self.dir.clone(),
            attempts: READ_ATTEMPTS,
        })
    }
}

fn bad_target(path: &Path, target: &str, reason: &'static str) -> Error {
    Error::BadTarget {
        path: path.to_owned(),
        target: target.to_owned(),
        reason,
    }
}

/// A stable content hash of a plain directory's keys.
fn plain_version(entries: &Entries) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    for (key, content) in entries {
        hasher.update(key.as_bytes());
        hasher.update(&[0]);
        match content {
            Ok(bytes) => {
                hasher.update(&(bytes.len() as u64).to_le_bytes());
                hasher.update(bytes);
            }
            Err(e) => hasher.update(e.to_string().as_bytes()),
        }
        hasher.update(&[0]);
    }
    format!("plain-{:016x}", hasher.digest())
}
