//! Reading a mounted volume: telling a ConfigMap volume (one with `..data`)
//! from a plain directory, and taking consistent snapshots of either.
//!
//! A ConfigMap snapshot is read the only safe way: `readlink(..data)` gives
//! the data directory `T`; every key is read under `<dir>/T/`; `..data` is
//! read again. If it moved, or a read found a file gone (the kubelet deletes
//! the old directory right after the swap), the read starts over. So a
//! snapshot never mixes two versions.
//!
//! Some filesystems hide symlinks: over SMB, through some FUSE mounts and
//! under Wine (a Linux-written volume read by a Windows program), `..data`
//! shows as a plain directory and every key as a plain file. There
//! `<dir>/..data` can only be read as a plain directory: nothing tells one
//! version from the next, so a read can mix them.

mod link;
mod walk;

use std::{
    fs,
    path::{Path, PathBuf},
    time::SystemTime,
};

pub(crate) use link::{DataLink, LinkRead, check_target};
pub use walk::{Entries, Limits, MAX_DEPTH};
pub(crate) use walk::{Fingerprint, RootLink, Select, WalkError};

use crate::{Error, Result};

/// How many times a consistent read is tried before giving up for this tick.
pub const READ_ATTEMPTS: u32 = 8;

/// Default per-file cap: 16 MiB (a ConfigMap holds at most 1 MiB).
pub const DEFAULT_MAX_FILE_SIZE: u64 = 16 << 20;

/// Default cap on the keys read in one version, together: 64 MiB, many
/// times what a ConfigMap (1 MiB) or a projected volume holds, and a bound
/// on memory however many large files a hostile volume offers.
pub const DEFAULT_MAX_TOTAL_SIZE: u64 = 64 << 20;

/// Default cap on the entries listed in one version: a ConfigMap's 1 MiB
/// cannot name more keys than this, and listing 100,000 files on every
/// tick of a plain directory would cost a quarter of a second.
pub const DEFAULT_MAX_ENTRIES: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            max_total_size: DEFAULT_MAX_TOTAL_SIZE,
            max_entries: DEFAULT_MAX_ENTRIES,
        }
    }
}

/// What kind of directory a volume is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Has a `..data` link: written by the kubelet (or `publish`).
    ConfigMap,
    /// A directory without `..data` (a dev host, a hostPath or a subPath
    /// mount), or one whose `..data` is a real directory (a filesystem
    /// that hides symlinks): read as plain files.
    Plain,
    /// The directory does not exist.
    Missing,
}

/// Which directory plain mode walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlainRoot {
    /// The volume directory itself: it has no `..data`.
    Dir,
    /// `<dir>/..data`: a real directory where symlinks are hidden (SMB,
    /// some FUSE mounts, Wine), or the link followed when plain mode is
    /// forced on a ConfigMap volume.
    Data,
}

/// What `<dir>/..data` is, looked at on a change of mode (never on an idle
/// tick): one `readlink`, and an `lstat` only when it is not a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataEntry {
    /// No `..data` (or it cannot be read).
    Missing,
    /// A symlink, whatever its target: ConfigMap mode validates it.
    Link,
    /// A real directory: the filesystem hides symlinks.
    Dir,
    /// Something else (a regular file): refused in ConfigMap mode.
    Other,
}

/// The points inside a consistent read at which
/// [`Volume::read_configmap_with_hook`] calls its hook (and
/// [`Volume::read_plain_with_hook`], after each key): where a writer
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

/// One consistent version of a volume. Read by [`Volume`]; it may carry
/// more about the version in later releases.
#[derive(Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The `..data` target in ConfigMap mode; a content hash
    /// (`plain-<16 hex digits>`) in plain mode.
    pub version: String,
    /// The layout it was read from.
    pub layout: Layout,
    /// When `..data` was swapped to this version (the mtime of the `..data`
    /// symlink); `None` in plain mode.
    pub swapped_at: Option<SystemTime>,
    /// The directory the keys were read from: the version's own data
    /// directory (`<dir>/<target>`) in ConfigMap mode; in plain mode the
    /// volume directory, or `<dir>/..data` where `..data` is a directory.
    pub data_dir: PathBuf,
    /// When the reader first saw this version: the `readlink` that began
    /// the attempt that read it. A read that restarts because the volume
    /// moved on lands on a newer version than the one that was first
    /// noticed; detection time and lag belong to the version read.
    pub seen_at: SystemTime,
    /// The keys read (the selected ones: all of them with
    /// [`Volume::select_all`], the default), each with its content or why
    /// it was refused.
    pub entries: Entries,
    /// Every key present, sorted, read or not.
    pub names: Vec<String>,
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
    /// `<dir>/..data`, for plain reads of it.
    data: PathBuf,
    limits: Limits,
    /// Only these keys are read; `None`: every key.
    keys: Option<Vec<String>>,
    link: DataLink,
}

impl Volume {
    /// A volume at `dir`, refusing files larger than `max_file_size` bytes
    /// (and the default caps on the total and the number of entries).
    pub fn new(dir: impl Into<PathBuf>, max_file_size: u64) -> Self {
        Self::with_limits(
            dir,
            Limits {
                max_file_size,
                ..Limits::default()
            },
        )
    }

    /// A volume at `dir` read within `limits`.
    pub fn with_limits(dir: impl Into<PathBuf>, limits: Limits) -> Self {
        let dir = dir.into();
        Volume {
            link: DataLink::new(&dir),
            data: dir.join("..data"),
            dir,
            limits,
            keys: None,
        }
    }

    /// Reads only `keys` (every other key is listed by name, never read).
    pub fn select_keys(&mut self, keys: Vec<String>) {
        self.keys = Some(keys);
    }

    /// Reads every key (the default).
    pub fn select_all(&mut self) {
        self.keys = None;
    }

    fn select(&self) -> Select<'_> {
        match &self.keys {
            Some(keys) => Select::Keys(keys),
            None => Select::All,
        }
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Looks at the directory to tell its layout. A `..data` that is a
    /// real directory (symlinks hidden by the filesystem) is
    /// [`Layout::Plain`]; any other `..data` is [`Layout::ConfigMap`].
    pub fn layout(&mut self) -> Layout {
        match self.data_entry() {
            DataEntry::Link | DataEntry::Other => Layout::ConfigMap,
            DataEntry::Dir => Layout::Plain,
            DataEntry::Missing if self.dir.is_dir() => Layout::Plain,
            DataEntry::Missing => Layout::Missing,
        }
    }

    /// What `..data` is now.
    pub(crate) fn data_entry(&mut self) -> DataEntry {
        match self.link.read() {
            Ok(LinkRead::Missing) | Err(_) => DataEntry::Missing,
            Ok(LinkRead::Target(_) | LinkRead::TooLong) => DataEntry::Link,
            // Not a link: the filesystem may show a link as what it points
            // to (SMB, Wine), so look at what it is.
            Ok(LinkRead::NotALink) => match fs::symlink_metadata(&self.data) {
                Ok(m) if m.is_dir() => DataEntry::Dir,
                Ok(_) => DataEntry::Other,
                // Gone between the two looks.
                Err(_) => DataEntry::Missing,
            },
        }
    }

    /// Reads a snapshot in whatever layout the directory has now: through
    /// `..data` when it is a link, as plain files under it when it is a
    /// directory, the directory's own files without it.
    pub fn snapshot(&mut self) -> Result<Snapshot> {
        match self.data_entry() {
            DataEntry::Dir => self.read_plain_in(PlainRoot::Data),
            DataEntry::Link | DataEntry::Other => self.read_configmap(),
            DataEntry::Missing if self.dir.is_dir() => self.read_plain(),
            DataEntry::Missing => Err(Error::DirMissing {
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
            let target = match self.read_target(&link_path)? {
                Some(t) => t,
                None => {
                    return Err(Error::DataLinkMissing {
                        path: link_path.clone(),
                    });
                }
            };
            // After the readlink that saw this target: taken before it, a
            // slow readlink (FUSE, NFS) could let the swap land in between
            // and the lag come out negative.
            let seen_at = SystemTime::now();
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
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if self.read_target(&link_path)?.as_deref() == Some(target.as_str()) {
                        return Err(bad_target(
                            &link_path,
                            &target,
                            "points to a missing directory",
                        ));
                    }
                    continue;
                }
                // Permission denied and the like: the real cause, as a
                // passing fault, not "missing".
                Err(e) => return Err(Error::io(&data_dir, "cannot look at the data directory", e)),
            }
            let walked = match walk::read(
                &data_dir,
                RootLink::Refuse,
                self.select(),
                self.limits,
                true,
                &mut || hook(ReadStep::KeyRead),
            ) {
                Ok(walked) => walked,
                Err(WalkError::Vanished) => continue,
                Err(WalkError::Fatal(e)) => {
                    // A listing or read that failed because the writer
                    // deleted the directory meanwhile is not a fault.
                    if self.read_target(&link_path)?.as_deref() != Some(target.as_str()) {
                        continue;
                    }
                    return Err(e);
                }
            };
            hook(ReadStep::Verifying);
            if self.read_target(&link_path)?.as_deref() != Some(target.as_str()) {
                continue;
            }
            return Ok(Snapshot {
                version: target,
                layout: Layout::ConfigMap,
                data_dir,
                swapped_at,
                seen_at,
                entries: walked.entries,
                names: walked.names,
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
                let reason = if link_path.is_dir() {
                    "..data is a directory, not a symlink: this filesystem hides symlinks \
                     (SMB, some FUSE mounts, Wine)"
                } else {
                    "..data is not a symlink"
                };
                return Err(bad_target(link_path, "", reason));
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

    /// Reads a plain directory: every regular file below it (the selected
    /// ones), with a content hash of what was read as the version.
    pub fn read_plain(&mut self) -> Result<Snapshot> {
        self.read_plain_in(PlainRoot::Dir)
    }

    /// [`read_plain`](Self::read_plain), calling `hook` with
    /// [`ReadStep::KeyRead`] after each key: tests use it to change the
    /// directory in the middle of a read.
    pub fn read_plain_with_hook(&mut self, hook: &mut dyn FnMut(ReadStep)) -> Result<Snapshot> {
        self.read_plain_in_with_hook(PlainRoot::Dir, hook)
    }

    /// The directory plain mode walks from `root`.
    fn plain_dir(&self, root: PlainRoot) -> &Path {
        match root {
            PlainRoot::Dir => &self.dir,
            PlainRoot::Data => &self.data,
        }
    }

    /// [`read_plain`](Self::read_plain) of the directory or of its
    /// `..data`.
    pub(crate) fn read_plain_in(&mut self, root: PlainRoot) -> Result<Snapshot> {
        self.read_plain_in_with_hook(root, &mut |_| {})
    }

    fn read_plain_in_with_hook(
        &mut self,
        root: PlainRoot,
        hook: &mut dyn FnMut(ReadStep),
    ) -> Result<Snapshot> {
        let dir = self.plain_dir(root);
        for _ in 0..READ_ATTEMPTS {
            match walk::read(
                dir,
                RootLink::Follow,
                self.select(),
                self.limits,
                true,
                &mut || hook(ReadStep::KeyRead),
            ) {
                Ok(walked) => {
                    return Ok(Snapshot {
                        version: plain_version(&walked.entries),
                        layout: Layout::Plain,
                        data_dir: dir.to_owned(),
                        swapped_at: None,
                        seen_at: SystemTime::now(),
                        entries: walked.entries,
                        names: walked.names,
                    });
                }
                Err(WalkError::Vanished) if !dir.is_dir() => {
                    return Err(Error::DirMissing {
                        path: dir.to_owned(),
                    });
                }
                Err(WalkError::Vanished) => continue,
                Err(WalkError::Fatal(e)) => return Err(e),
            }
        }
        Err(Error::Unstable {
            path: dir.to_owned(),
            attempts: READ_ATTEMPTS,
        })
    }

    /// Plain mode's cheap look: what every key under `root` looks like,
    /// without reading any content.
    pub(crate) fn fingerprints(&self, root: PlainRoot) -> Result<Vec<Fingerprint>, WalkError> {
        walk::read(
            self.plain_dir(root),
            RootLink::Follow,
            Select::All,
            self.limits,
            false,
            &mut || {},
        )
        .map(|w| w.fingerprints)
    }
}

/// Reads every key under `dir` (the writer's "has anything changed"
/// comparison), within `limits`.
pub(crate) fn read_tree(dir: &Path, limits: Limits) -> Result<Entries, WalkError> {
    walk::read(dir, RootLink::Follow, Select::All, limits, true, &mut || {}).map(|w| w.entries)
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

/// The consistent read against a volume written by the kubelet-style
/// writer. The integration suite covers every interleaving; these fail in
/// a second when the read itself is broken (and so keep a mutation run's
/// cost low: the unit tests run first).
#[cfg(test)]
#[cfg(unix)]
mod tests {
    use super::*;
    use crate::{AtomicWriter, Outcome, Payload};

    fn written(files: &[(&str, &str)]) -> (tempfile::TempDir, String) {
        let tmp = tempfile::tempdir().unwrap();
        let mut payload = Payload::new();
        for (key, data) in files {
            payload.insert(key, *data).unwrap();
        }
        let Outcome::Written { version, .. } =
            AtomicWriter::new(tmp.path()).write(&payload).unwrap()
        else {
            panic!("nothing written")
        };
        (tmp, version)
    }

    #[test]
    fn a_quiet_volume_is_read_in_one_attempt() {
        let (tmp, version) = written(&[("a.json", "1"), ("dir/b", "2")]);
        let mut volume = Volume::new(tmp.path(), 1 << 20);
        let mut targets_read = 0;
        let snapshot = volume
            .read_configmap_with_hook(&mut |step| {
                targets_read += usize::from(step == ReadStep::TargetRead)
            })
            .unwrap();
        assert_eq!(targets_read, 1);
        assert_eq!(snapshot.version, version);
        assert_eq!(snapshot.layout, Layout::ConfigMap);
        assert_eq!(snapshot.names, ["a.json", "dir/b"]);
        assert_eq!(snapshot.get("a.json").unwrap().unwrap(), b"1");
        assert_eq!(snapshot.get("dir/b").unwrap().unwrap(), b"2");
        assert!(snapshot.get("c").is_none());
        assert_eq!(volume.layout(), Layout::ConfigMap);
        assert_eq!(volume.snapshot().unwrap().version, version);
    }

    #[test]
    fn data_pointing_at_a_missing_directory_is_a_bad_target() {
        let (tmp, _) = written(&[("a.json", "1")]);
        let link = tmp.path().join("..data");
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("..missing", &link).unwrap();
        let err = Volume::new(tmp.path(), 1 << 20)
            .read_configmap()
            .unwrap_err();
        assert!(
            matches!(&err, Error::BadTarget { target, reason, .. }
                if target == "..missing" && *reason == "points to a missing directory"),
            "{err}"
        );
    }

    #[test]
    fn a_plain_directory_and_a_missing_one_are_told_apart() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("k"), "v").unwrap();
        let mut plain = Volume::new(tmp.path(), 1 << 20);
        assert_eq!(plain.layout(), Layout::Plain);
        let snapshot = plain.snapshot().unwrap();
        assert_eq!(snapshot.layout, Layout::Plain);
        assert!(
            snapshot.version.starts_with("plain-"),
            "{}",
            snapshot.version
        );
        assert_eq!(snapshot.version.len(), "plain-".len() + 16);
        let mut missing = Volume::new(tmp.path().join("absent"), 1 << 20);
        assert_eq!(missing.layout(), Layout::Missing);
        assert!(matches!(missing.snapshot(), Err(Error::DirMissing { .. })));
    }
}
