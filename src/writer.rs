//! A writer that updates a directory exactly as the kubelet's atomic writer
//! does (`pkg/volume/util/atomic_writer.go` in Kubernetes), step by step,
//! one method a step of its `AtomicWriter.Write`. It backs the `publish` command, the
//! demo, the tests and the benchmarks, so that what they exercise is what a
//! real pod sees.
//!
//! A hook runs after every step. Tests use it to look at the directory in
//! each intermediate state, or to stop the writer there as if it had
//! crashed.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    ops::ControlFlow,
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::{
    Error, Result,
    volume::{Limits, read_tree},
};

/// The default file mode, as the kubelet's `defaultMode`.
pub const DEFAULT_MODE: u32 = 0o644;

/// One key's content and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    /// The bytes.
    pub data: Vec<u8>,
    /// Unix permission bits (ignored on Windows).
    pub mode: u32,
}

/// The full content of a volume: every key, as in a ConfigMap's `data`.
/// Writing a payload replaces the previous one; keys it lacks are removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    files: BTreeMap<String, FileProjection>,
}

impl Payload {
    /// An empty payload (a valid volume with no keys).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key` with mode 0644; the key is checked as the API server does.
    pub fn insert(&mut self, key: &str, data: impl Into<Vec<u8>>) -> Result<&mut Self> {
        self.insert_with_mode(key, data, DEFAULT_MODE)
    }

    /// Adds `key` with `mode`.
    pub fn insert_with_mode(
        &mut self,
        key: &str,
        data: impl Into<Vec<u8>>,
        mode: u32,
    ) -> Result<&mut Self> {
        let key = clean_key(key);
        validate_key(&key)?;
        self.files.insert(
            key,
            FileProjection {
                data: data.into(),
                mode,
            },
        );
        Ok(self)
    }

    /// Adds keys as `kubectl create configmap --from-file` does: `PATH` (a
    /// file becomes the key named after it; a directory adds each regular
    /// file directly inside it) or `KEY=PATH`.
    pub fn add_from_file(&mut self, spec: &str) -> Result<&mut Self> {
        let (key, path) = match spec.split_once('=') {
            Some((key, path)) => (Some(key), Path::new(path)),
            None => (None, Path::new(spec)),
        };
        let read = |p: &Path| fs::read(p).map_err(|e| Error::io(p, "cannot read", e));
        if key.is_none() && path.is_dir() {
            let entries =
                fs::read_dir(path).map_err(|e| Error::io(path, "cannot list directory", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io(path, "cannot list directory", e))?;
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    self.insert(&name, read(&entry.path())?)?;
                }
            }
            return Ok(self);
        }
        let key = match key {
            Some(key) => key.to_owned(),
            None => path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .ok_or_else(|| Error::InvalidKey {
                    key: spec.to_owned(),
                    reason: "no file name to use as the key",
                })?,
        };
        let data = read(path)?;
        self.insert(&key, data)
    }

    /// Adds `KEY=VALUE` as `kubectl create configmap --from-literal` does.
    pub fn add_from_literal(&mut self, spec: &str) -> Result<&mut Self> {
        match spec.split_once('=') {
            Some((key, value)) => self.insert(key, value),
            None => Err(Error::InvalidKey {
                key: spec.to_owned(),
                reason: "expected KEY=VALUE",
            }),
        }
    }

    /// Sets the mode of `key` (as a ConfigMap item's `mode`); false if
    /// there is no such key.
    pub fn set_mode(&mut self, key: &str, mode: u32) -> bool {
        match self.files.get_mut(&clean_key(key)) {
            Some(file) => {
                file.mode = mode;
                true
            }
            None => false,
        }
    }

    /// Sets every key's mode (as a volume's `defaultMode`).
    pub fn set_default_mode(&mut self, mode: u32) {
        for file in self.files.values_mut() {
            file.mode = mode;
        }
    }

    /// The largest key, as (key, size).
    pub fn largest(&self) -> Option<(&str, usize)> {
        self.files
            .iter()
            .map(|(k, f)| (k.as_str(), f.data.len()))
            .max_by_key(|(_, n)| *n)
    }

    /// The keys, sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The top-level names the keys need links for (`a` for `a/b/c`).
    fn top_level(&self) -> BTreeSet<&str> {
        self.files.keys().map(|k| top_component(k)).collect()
    }
}

fn top_component(key: &str) -> &str {
    key.split('/').next().unwrap_or(key)
}

/// Cleans a key path as the kubelet does before validating it (Go's
/// `path.Clean`, less the resolution of `..`, which validation refuses):
/// `a//b` is `a/b`, `./a` is `a`.
pub fn clean_key(key: &str) -> String {
    let cleaned: Vec<&str> = key
        .split('/')
        .filter(|e| !e.is_empty() && *e != ".")
        .collect();
    if cleaned.is_empty() {
        return key.to_owned();
    }
    let mut out = cleaned.join("/");
    if key.starts_with('/') {
        out.insert(0, '/');
    }
    out
}

/// Checks a (cleaned) key as the kubelet does: relative, no `..` element,
/// at most 4096 characters, each element at most 255. No element may
/// start with `..` either: every such name is the kubelet's own
/// bookkeeping, which readers skip, so a key named so would be written and
/// never seen.
pub fn validate_key(key: &str) -> Result<()> {
    let invalid = |reason| {
        Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return invalid("empty");
    }
    if key.len() > 4096 {
        return invalid("longer than 4096 characters");
    }
    if key.starts_with('/') || key.starts_with('\\') || key.as_bytes().get(1) == Some(&b':') {
        return invalid("must be a relative path");
    }
    if key.starts_with("..") {
        return invalid("must not start with '..'");
    }
    if key.contains('\\') || key.contains('\0') {
        return invalid("must not contain '\\' or NUL");
    }
    for element in key.split('/') {
        if element.is_empty() || element == "." {
            return invalid("has an empty or '.' path element");
        }
        if element == ".." {
            return invalid("must not contain a '..' element");
        }
        if element.starts_with("..") {
            return invalid("has a path element starting with '..' (names readers skip)");
        }
        if element.len() > 255 {
            return invalid("has a path element longer than 255 characters");
        }
    }
    Ok(())
}

/// The points at which the hook runs, in order, numbered as the comment
/// on Kubernetes' `AtomicWriter.Write` numbers its steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Step (5): the new timestamped directory exists, empty.
    DataDirCreated,
    /// Step (6): every key is written into it.
    FilesWritten,
    /// Step (8): `..data_tmp` points at it.
    TmpLinkCreated,
    /// Step (9), Windows swap only: `..data` has been removed and not yet
    /// re-created.
    DataLinkRemoved,
    /// Step (9): `..data` points at the new directory.
    Swapped,
    /// Step (10): top-level links exist for new keys.
    LinksCreated,
    /// Step (11): links of removed keys are gone.
    LinksRemoved,
    /// Step (12): the old directory is deleted.
    OldDirRemoved,
}

/// How `..data` is switched to the new directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// `rename(..data_tmp, ..data)`: atomic (Linux, macOS).
    Rename,
    /// Windows: remove `..data`, create it anew, remove `..data_tmp`; for a
    /// moment there is no `..data`.
    RemoveThenCreate,
}

impl Default for Swap {
    fn default() -> Self {
        if cfg!(windows) {
            Swap::RemoveThenCreate
        } else {
            Swap::Rename
        }
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The payload equals what is there: nothing was swapped.
    Unchanged {
        /// The version still in place.
        version: String,
    },
    /// A new version is live.
    Written {
        /// The new data directory's name.
        version: String,
        /// The one it replaced.
        previous: Option<String>,
    },
    /// The hook stopped the writer after `after`, as a crash would.
    Interrupted {
        /// The last step done.
        after: Step,
        /// The data directory being written.
        version: String,
    },
}

/// Writes payloads into a volume directory the kubelet's way.
#[derive(Debug, Clone)]
pub struct AtomicWriter {
    dir: PathBuf,
    swap: Swap,
}

impl AtomicWriter {
    /// A writer for `dir`, swapping the way this platform's kubelet does.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        AtomicWriter {
            dir: dir.into(),
            swap: Swap::default(),
        }
    }

    /// Uses `swap` instead of the platform's way.
    pub fn with_swap(mut self, swap: Swap) -> Self {
        self.swap = swap;
        self
    }

    /// The volume directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `payload`.
    pub fn write(&self, payload: &Payload) -> Result<Outcome> {
        self.write_with_hook(payload, |_| ControlFlow::Continue(()))
    }

    /// Writes `payload`, calling `hook` after each step; `Break` stops there.
    ///
    /// The steps are those of the kubelet's `AtomicWriter.Write`
    /// (`pkg/volume/util/atomic_writer.go`), in its order; each is a method
    /// named after it, numbered here as that function's comment numbers
    /// them.
    pub fn write_with_hook(
        &self,
        payload: &Payload,
        mut hook: impl FnMut(Step) -> ControlFlow<()>,
    ) -> Result<Outcome> {
        // (1) validatePayload: done as each key is inserted.
        self.check_volume_dir()?;
        // (2) The current version, if any.
        let old = self.previous_version()?;
        // (3, 4) Nothing to write: only the user-visible links are made
        // sure of (the kubelet does so since kubernetes#121472).
        if let Some(old) = &old
            && self.same_content(old, payload)
        {
            self.create_links(payload)?;
            return Ok(Outcome::Unchanged {
                version: old.clone(),
            });
        }
        // (5) newTimestampDir.
        let version = self.make_data_dir()?;
        macro_rules! after {
            ($step:expr) => {
                if hook($step).is_break() {
                    return Ok(Outcome::Interrupted {
                        after: $step,
                        version,
                    });
                }
            };
        }
        after!(Step::DataDirCreated);
        // (6) writePayloadToDir; (7), the ownership pass, is not simulated.
        self.write_payload(&version, payload)?;
        after!(Step::FilesWritten);
        // (8) ..data_tmp -> the new directory.
        self.create_tmp_link(&version)?;
        after!(Step::TmpLinkCreated);
        // (9) The switch.
        match self.swap {
            Swap::Rename => self.rename_tmp_link(&version)?,
            Swap::RemoveThenCreate => {
                remove_link_if_present(&self.dir.join("..data"))?;
                after!(Step::DataLinkRemoved);
                self.recreate_data_link(&version)?;
            }
        }
        after!(Step::Swapped);
        // (10) createUserVisibleFiles: links for new keys (existing ones
        // already resolve through ..data).
        self.create_links(payload)?;
        after!(Step::LinksCreated);
        // (11) removeUserVisiblePaths: links of keys that are gone.
        if let Some(old) = &old {
            self.remove_old_links(old, payload)?;
        }
        after!(Step::LinksRemoved);
        // (12) The previous timestamped directory.
        if let Some(old) = &old {
            self.remove_old_dir(old)?;
        }
        after!(Step::OldDirRemoved);
        Ok(Outcome::Written {
            version,
            previous: old,
        })
    }

    /// The volume directory must be there, as a directory: the kubelet
    /// creates the mount point before writing (`NewAtomicWriter` stats it);
    /// so must the caller (the publish command does, saying so).
    fn check_volume_dir(&self) -> Result<()> {
        match fs::metadata(&self.dir) {
            Ok(meta) if meta.is_dir() => Ok(()),
            Ok(_) => Err(Error::io(
                &self.dir,
                "is not a directory",
                io::Error::from(io::ErrorKind::NotADirectory),
            )),
            Err(e) => Err(Error::io(&self.dir, "volume directory is not there", e)),
        }
    }

    /// Step (2) of `Write`: `readlink(..data)`, the current version; `None`
    /// when there is none. Any other error is refused, as the kubelet
    /// refuses it: a `..data` that is not a link is not "no version", and
    /// renaming over it would destroy it.
    fn previous_version(&self) -> Result<Option<String>> {
        let data_link = self.dir.join("..data");
        let old = match fs::read_link(&data_link) {
            Ok(target) => target.to_string_lossy().into_owned(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(&data_link, "cannot read link", e)),
        };
        // A target the kubelet would never write is not a previous version:
        // never compare with it and, above all, never delete it.
        match crate::volume::check_target(old.as_bytes()) {
            Ok(_) => Ok(Some(old)),
            Err(reason) => {
                log::warn!(
                    "{}: ignoring ..data target {old:?} ({reason}); writing a fresh version",
                    data_link.display()
                );
                Ok(None)
            }
        }
    }

    /// Undoes a write that failed between steps (5) and (9), as the kubelet
    /// does, so that no orphan directory is left behind.
    fn abandon(&self, version: &str, made_tmp_link: bool) {
        if made_tmp_link {
            let _ = remove_link_if_present(&self.dir.join("..data_tmp"));
        }
        let _ = fs::remove_dir_all(self.dir.join(version));
    }

    /// Step (6), `writePayloadToDir`: every key, in random order, as the
    /// kubelet's map iteration.
    fn write_payload(&self, version: &str, payload: &Payload) -> Result<()> {
        let data_dir = self.dir.join(version);
        let mut files: Vec<_> = payload.files.iter().collect();
        fastrand::shuffle(&mut files);
        for (key, projection) in files {
            if let Err(e) = write_file(&data_dir.join(key), projection) {
                self.abandon(version, false);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Step (8): `..data_tmp` -> the new directory. A leftover `..data_tmp`
    /// (a writer that died between steps 8 and 9) makes this fail, as it
    /// makes every kubelet write fail: the volume stays on its version
    /// until someone removes it (publish --repair, [`AtomicWriter::repair`]).
    fn create_tmp_link(&self, version: &str) -> Result<()> {
        let tmp_link = self.dir.join("..data_tmp");
        symlink(Path::new(version), &tmp_link, true).map_err(|e| {
            self.abandon(version, false);
            match fs::symlink_metadata(&tmp_link) {
                Ok(_) => Error::StaleLink { path: tmp_link },
                Err(_) => e,
            }
        })
    }

    /// Step (9) on Linux and macOS: `rename(..data_tmp, ..data)`, the atomic
    /// switch.
    fn rename_tmp_link(&self, version: &str) -> Result<()> {
        let data_link = self.dir.join("..data");
        fs::rename(self.dir.join("..data_tmp"), &data_link).map_err(|e| {
            self.abandon(version, true);
            Error::io(&data_link, "cannot rename ..data_tmp over", e)
        })
    }

    /// Step (9) on Windows, once the old `..data` is removed: `..data` made
    /// anew, then `..data_tmp` removed.
    fn recreate_data_link(&self, version: &str) -> Result<()> {
        symlink(Path::new(version), &self.dir.join("..data"), true)?;
        remove_link_if_present(&self.dir.join("..data_tmp"))
    }

    /// Step (11), `removeUserVisiblePaths`: the top-level entries of the
    /// keys `old` had and `payload` has not, whatever their type, as the
    /// kubelet removes them.
    fn remove_old_links(&self, old: &str, payload: &Payload) -> Result<()> {
        let keep = payload.top_level();
        for name in top_level_names(&self.dir.join(old)) {
            if keep.contains(name.as_str()) {
                continue;
            }
            let entry = self.dir.join(&name);
            match fs::symlink_metadata(&entry) {
                Ok(m) if m.is_dir() => {
                    fs::remove_dir_all(&entry).map_err(|e| Error::io(&entry, "cannot remove", e))?
                }
                Ok(_) => remove_link_if_present(&entry)?,
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// Step (12): the previous timestamped directory; already gone is not
    /// an error.
    fn remove_old_dir(&self, old: &str) -> Result<()> {
        let old_dir = self.dir.join(old);
        match fs::remove_dir_all(&old_dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(old_dir, "cannot remove old data directory", e)),
        }
    }

    /// Removes what a writer that died mid-write left: a stale
    /// `..data_tmp`, and timestamped directories `..data` does not point
    /// to. The kubelet never does this by itself; returns what it removed.
    pub fn repair(&self) -> Result<Vec<String>> {
        let mut removed = Vec::new();
        let tmp_link = self.dir.join("..data_tmp");
        if fs::symlink_metadata(&tmp_link).is_ok() {
            remove_link_if_present(&tmp_link)?;
            removed.push("..data_tmp".to_owned());
        }
        let current = fs::read_link(self.dir.join("..data"))
            .ok()
            .map(|t| t.to_string_lossy().into_owned());
        let entries = fs::read_dir(&self.dir)
            .map_err(|e| Error::io(&self.dir, "cannot list directory", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let orphan = name != "..data"
                && Some(&name) != current.as_ref()
                && crate::volume::check_target(name.as_bytes()).is_ok()
                && entry.file_type().is_ok_and(|t| t.is_dir());
            if orphan {
                fs::remove_dir_all(entry.path())
                    .map_err(|e| Error::io(entry.path(), "cannot remove", e))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Steps (3) and (4), `shouldWritePayload`: the byte-for-byte comparison
    /// with the current data directory (a key removed counts as a change).
    fn same_content(&self, old: &str, payload: &Payload) -> bool {
        // An old file larger than every new one cannot be equal: cap the read
        // there, so a huge file left in a volume is never loaded.
        let largest = payload
            .files
            .values()
            .map(|p| p.data.len() as u64)
            .max()
            .unwrap_or(0);
        let total = payload.files.values().map(|p| p.data.len() as u64).sum();
        let limits = Limits {
            max_file_size: largest,
            max_total_size: total,
            ..Limits::default()
        };
        let Ok(existing) = read_tree(&self.dir.join(old), limits) else {
            return false;
        };
        existing.len() == payload.files.len()
            && existing.iter().all(|(key, content)| {
                matches!((content, payload.files.get(key)), (Ok(bytes), Some(p)) if *bytes == p.data)
            })
    }

    /// Step (10), `createUserVisibleFiles`: `<dir>/<name> -> ..data/<name>`
    /// for each top-level name that has no link yet.
    fn create_links(&self, payload: &Payload) -> Result<()> {
        for name in payload.top_level() {
            let link = self.dir.join(name);
            if fs::symlink_metadata(&link).is_err() {
                let nested = !payload.files.contains_key(name);
                symlink(&Path::new("..data").join(name), &link, nested)?;
            }
        }
        Ok(())
    }

    /// Step (5), `newTimestampDir`: `..YYYY_MM_DD_HH_MM_SS.<random decimal>`
    /// (UTC), made 0700 then chmod 0755, as Go's `os.MkdirTemp` and the
    /// kubelet do.
    fn make_data_dir(&self) -> Result<String> {
        let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let prefix = format!(
            "..{}.",
            stamp.trim_end_matches('Z').replace(['-', 'T', ':'], "_")
        );
        let builder = {
            #[allow(unused_mut)]
            let mut builder = fs::DirBuilder::new();
            #[cfg(unix)]
            std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
            builder
        };
        loop {
            let name = format!("{prefix}{}", fastrand::u32(..));
            let path = self.dir.join(&name);
            match builder.create(&path) {
                Ok(()) => {
                    set_mode(&path, 0o755)?;
                    return Ok(name);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io(path, "cannot create data directory", e)),
            }
        }
    }
}

/// Top-level entries of a data directory, without the `..` ones.
fn top_level_names(data_dir: &Path) -> Vec<String> {
    fs::read_dir(data_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with(".."))
        .collect()
}

/// Step (6) for one key: parents, then the file created with its final mode
/// (as the kubelet does), then chmod to it (the umask may have cut it).
fn write_file(path: &Path, projection: &FileProjection) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, "cannot create directory", e))?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, projection.mode);
    let mut file = options
        .open(path)
        .map_err(|e| Error::io(path, "cannot create", e))?;
    io::Write::write_all(&mut file, &projection.data)
        .map_err(|e| Error::io(path, "cannot write", e))?;
    set_mode(path, projection.mode)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(path, "cannot chmod", e))
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// A relative symlink; on Windows a directory link when `dir`, and a clear
/// message when the OS refuses symlinks.
fn symlink(target: &Path, link: &Path, dir: bool) -> Result<()> {
    #[cfg(unix)]
    let result = {
        let _ = dir;
        std::os::unix::fs::symlink(target, link)
    };
    #[cfg(windows)]
    let result = if dir {
        std::os::windows::fs::symlink_dir(target, link)
    } else {
        std::os::windows::fs::symlink_file(target, link)
    };
    #[cfg(not(any(unix, windows)))]
    let result: io::Result<()> = {
        let _ = (target, dir);
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "symlinks are not supported here",
        ))
    };
    // Wine reports success for symlinks it never creates: make sure the
    // link is there before building a swap on it.
    #[cfg(windows)]
    let result = result.and_then(|()| match fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the system reported success but created no symlink (Wine does not support them)",
        )),
    });
    result.map_err(|source| {
        // ERROR_PRIVILEGE_NOT_HELD: no Developer Mode, not elevated.
        if cfg!(windows) && source.raw_os_error() == Some(1314) {
            Error::SymlinkPrivilege {
                path: link.to_owned(),
                source,
            }
        } else {
            Error::io(link, "cannot create symlink", source)
        }
    })
}

/// Removes a link; on Windows a directory symlink needs `remove_dir`.
fn remove_link_if_present(link: &Path) -> Result<()> {
    let result = fs::remove_file(link).or_else(|e| {
        if cfg!(windows) && e.kind() != io::ErrorKind::NotFound {
            fs::remove_dir(link)
        } else {
            Err(e)
        }
    });
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(link, "cannot remove link", e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One write after another, as the kubelet's: each version in a new
    /// data directory behind `..data`, every key reachable through its
    /// top-level link, the old version and the links of removed keys gone,
    /// and an equal payload not written again. A unit test, so that a
    /// writer that skips a step fails in a second, not at the integration
    /// tests' deadlines.
    #[cfg(unix)]
    #[test]
    fn writes_follow_the_kubelet_steps_from_version_to_version() {
        let tmp = tempfile::tempdir().unwrap();
        let writer = AtomicWriter::new(tmp.path());
        let read = |name: &str| fs::read_to_string(tmp.path().join(name)).ok();
        let mut p = Payload::new();
        p.insert("a.json", "1").unwrap();
        p.insert("dir/b.json", "2").unwrap();
        let Outcome::Written {
            version: v1,
            previous: None,
        } = writer.write(&p).unwrap()
        else {
            panic!("not a first write")
        };
        assert_eq!(
            fs::read_link(tmp.path().join("..data")).unwrap(),
            Path::new(&v1)
        );
        assert_eq!(read(&format!("{v1}/dir/b.json")).as_deref(), Some("2"));
        assert_eq!(read("a.json").as_deref(), Some("1"));
        assert_eq!(read("dir/b.json").as_deref(), Some("2"));
        assert_eq!(
            fs::read_link(tmp.path().join("dir")).unwrap(),
            Path::new("..data/dir")
        );

        let mut p = Payload::new();
        p.insert("a.json", "3").unwrap();
        let Outcome::Written {
            version: v2,
            previous: Some(previous),
        } = writer.write(&p).unwrap()
        else {
            panic!("not a second write")
        };
        assert_eq!(previous, v1);
        assert_ne!(v2, v1);
        assert_eq!(read("a.json").as_deref(), Some("3"));
        assert!(!tmp.path().join(&v1).exists(), "the old version is left");
        assert!(
            fs::symlink_metadata(tmp.path().join("dir")).is_err(),
            "the removed key's link is left"
        );
        assert!(fs::symlink_metadata(tmp.path().join("..data_tmp")).is_err());

        assert_eq!(
            writer.write(&p).unwrap(),
            Outcome::Unchanged { version: v2 }
        );
        let mut p = p.clone();
        p.insert("new.json", "4").unwrap();
        assert!(
            matches!(writer.write(&p).unwrap(), Outcome::Written { .. }),
            "a key added to an unchanged payload was not written"
        );
        assert_eq!(read("new.json").as_deref(), Some("4"));
    }

    #[test]
    fn keys_are_checked_like_the_kubelet() {
        for ok in ["config.json", "a/b/c", "x.y", "..a".trim_start_matches('.')] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        let long_element = "x".repeat(256);
        for bad in [
            "",
            "/abs",
            "..hidden",
            "a/../b",
            "a/..b.json",
            &long_element,
            "a\\b",
        ] {
            assert!(validate_key(&clean_key(bad)).is_err(), "{bad}");
        }
    }

    /// Each refusal for its own reason, and the length limits at their
    /// boundaries: 4096 characters a key, 255 an element.
    #[test]
    fn keys_are_refused_for_their_own_reason_at_the_kubelet_limits() {
        let reason = |key: &str| match validate_key(key) {
            Err(Error::InvalidKey { reason, .. }) => reason,
            other => panic!("{key:?}: {other:?}"),
        };
        assert_eq!(reason(""), "empty");
        for absolute in ["/a", "\\a", "C:a"] {
            assert_eq!(reason(absolute), "must be a relative path", "{absolute:?}");
        }
        assert_eq!(reason("..a"), "must not start with '..'");
        assert_eq!(reason("a\\b"), "must not contain '\\' or NUL");
        assert_eq!(reason("a\0b"), "must not contain '\\' or NUL");
        // validate_key is public: it refuses what clean_key would clean.
        assert_eq!(reason("a//b"), "has an empty or '.' path element");
        assert_eq!(reason("a/./b"), "has an empty or '.' path element");
        assert_eq!(reason("a/../b"), "must not contain a '..' element");
        let element = "x".repeat(255);
        assert!(validate_key(&element).is_ok());
        assert!(validate_key(&format!("a/{element}")).is_ok());
        assert_eq!(
            reason(&format!("a/{element}x")),
            "has a path element longer than 255 characters"
        );
        // 15 elements of 255, one of 254 and one of 1, with 16 slashes.
        let key = format!("{}/{}/x", [element.as_str(); 15].join("/"), "y".repeat(254));
        assert_eq!(key.len(), 4096);
        assert!(validate_key(&key).is_ok(), "4096 characters");
        assert_eq!(reason(&format!("{key}x")), "longer than 4096 characters");
    }

    #[test]
    fn keys_are_cleaned_before_validation_as_the_kubelet_does() {
        assert_eq!(clean_key("a//b"), "a/b");
        assert_eq!(clean_key("./a"), "a");
        assert_eq!(clean_key("a/./b/"), "a/b");
        let mut p = Payload::new();
        p.insert("a//b.json", "x").unwrap();
        assert_eq!(p.keys().collect::<Vec<_>>(), ["a/b.json"]);
    }
}
