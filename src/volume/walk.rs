//! Walking a data directory and reading its keys without ever following a
//! link: regular files only, never blocking on a FIFO, never reading past
//! the caps, and with bounded memory and time on a hostile or huge volume.
//!
//! On Unix the walk goes through directory handles: the data directory is
//! opened once, and every entry below it is opened relative to its parent's
//! handle by a single name with `O_NOFOLLOW`. No path is ever resolved
//! again, so a writer that swaps a directory for a symlink to elsewhere
//! (`renameat2(RENAME_EXCHANGE)`) between our listing and our open gets
//! `ELOOP`, never a file from outside the volume. Elsewhere (Windows) the
//! walk uses paths, with the same checks on what was opened.
//!
//! The walk is iterative (an explicit stack), bounded in depth and in the
//! number of entries, so deep nesting cannot overflow a small thread stack
//! and 100,000 files cannot make one tick take seconds.

use std::{collections::BTreeMap, io, path::Path};

use crate::Error;

/// The keys of one directory tree that were read, each with its content or
/// the reason it was refused. Keys use `/` between components on every
/// platform.
pub type Entries = BTreeMap<String, Result<Vec<u8>, Error>>;

/// Deeper directories than this are refused: a kubelet key has at most
/// 4096 characters, and nothing real nests this deep.
pub const MAX_DEPTH: usize = 64;

/// Bounds on one read of a volume. More bounds may come: start from
/// [`Limits::default`] and set the fields you need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// A larger file is refused (a content error naming it).
    pub max_file_size: u64,
    /// Keys read add up to at most this; beyond it the version is refused.
    pub max_total_size: u64,
    /// At most this many entries (files and directories) are listed.
    pub max_entries: usize,
}

/// Which keys' content is read. Every key is listed (names cost no reads),
/// so that a missing key can be reported with the keys that exist.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Select<'a> {
    /// Every key.
    All,
    /// Only these keys.
    Keys(&'a [String]),
}

impl Select<'_> {
    fn wants(&self, key: &str) -> bool {
        match self {
            Select::All => true,
            Select::Keys(keys) => keys.iter().any(|k| k == key),
        }
    }
}

/// Why a walk stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// Something disappeared mid-read: the writer deleted the directory we
    /// were reading. Start over from `readlink`.
    Vanished,
    /// The walk cannot go on: a passing fault (listing or reading failed) or
    /// a content error (over a cap).
    Fatal(Error),
}

impl From<Error> for WalkError {
    fn from(e: Error) -> Self {
        WalkError::Fatal(e)
    }
}

/// What was found under a root.
#[derive(Debug, Default)]
pub(crate) struct Walked {
    /// The selected keys, read (or refused).
    pub entries: Entries,
    /// Every key present, sorted, read or not.
    pub names: Vec<String>,
    /// What each key looked like, for plain mode's change detection.
    pub fingerprints: Vec<Fingerprint>,
}

/// What plain mode compares on each tick to notice a change without reading
/// content: size, full-precision mtime and ctime, mode and inode. ctime and
/// mode catch a `chmod` (a permission fix) that leaves everything else as
/// it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    pub key: String,
    pub len: u64,
    pub modified: Option<(i64, u32)>,
    pub changed: Option<(i64, u32)>,
    pub mode: u32,
    pub inode: u64,
    pub refused: bool,
}

impl Fingerprint {
    /// Whether a fingerprint taken at `taken` could miss a same-size
    /// rewrite: the file was modified within the timestamp granularity
    /// before it. Whole-second timestamps (no sub-second part) get 2 s (FAT
    /// keeps two); finer ones 100 ms, well above the kernel's coarse clock
    /// tick that stamps files (kernels before 6.13).
    pub(crate) fn is_racy(&self, taken: std::time::SystemTime) -> bool {
        let Some((secs, nanos)) = self.modified.max(self.changed) else {
            return true;
        };
        let window = if nanos == 0 {
            std::time::Duration::from_secs(2)
        } else {
            std::time::Duration::from_millis(100)
        };
        let Ok(taken) = taken.duration_since(std::time::UNIX_EPOCH) else {
            return true;
        };
        let stamp = std::time::Duration::new(secs.max(0) as u64, nanos);
        taken.saturating_sub(stamp) < window
    }
}

/// How the root of a walk is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RootLink {
    /// As given: a volume path, or a `..data` followed on purpose, may be a
    /// link.
    Follow,
    /// By its last name under its parent's handle, never through a link: a
    /// ConfigMap's data directory, which a writer could swap for a link to
    /// elsewhere between the reader's check of it and this open.
    Refuse,
}

/// Lists and reads `root`: every key listed and fingerprinted, the selected
/// ones read. `after_key` runs after each key read (tests interleave a
/// writer there).
pub(crate) fn read(
    root: &Path,
    root_link: RootLink,
    select: Select<'_>,
    limits: Limits,
    read_content: bool,
    after_key: &mut dyn FnMut(),
) -> Result<Walked, WalkError> {
    let mut walked = Walked::default();
    let mut total: u64 = 0;
    let mut count = 0usize;
    imp::walk(root, root_link, &mut |key: String, node: imp::Node<'_>| {
        count += 1;
        if count > limits.max_entries {
            return Err(WalkError::Fatal(Error::VolumeRefused {
                path: root.to_owned(),
                reason: format!(
                    "holds more than {} entries (a ConfigMap holds at most 1 MiB); refusing to read it",
                    limits.max_entries
                ),
            }));
        }
        let Some(node) = node.file() else {
            // A directory: nothing to fingerprint or read by itself.
            return Ok(());
        };
        walked.fingerprints.push(node.fingerprint(&key));
        walked.names.push(key.clone());
        if !read_content || !select.wants(&key) {
            return Ok(());
        }
        let content = node.read(&key, limits.max_file_size)?;
        if let Ok(bytes) = &content {
            total += bytes.len() as u64;
            if total > limits.max_total_size {
                return Err(WalkError::Fatal(Error::VolumeRefused {
                    path: root.to_owned(),
                    reason: format!(
                        "the keys read add up to more than {} bytes (--max-total-size)",
                        limits.max_total_size
                    ),
                }));
            }
        }
        walked.entries.insert(key, content);
        after_key();
        Ok(())
    })?;
    walked.names.sort();
    walked.fingerprints.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(walked)
}

/// Why a non-file entry is refused.
fn describe(kind: Kind) -> &'static str {
    match kind {
        Kind::Symlink => {
            "is a symlink; only regular files are read (a link could lead outside the volume)"
        }
        Kind::Fifo => "is a FIFO, not a regular file (reading it could block forever)",
        Kind::Socket => "is a socket, not a regular file",
        Kind::Device => "is a device, not a regular file",
        Kind::Other | Kind::File | Kind::Dir => "is not a regular file",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
// Windows' std metadata tells no FIFOs, sockets or devices apart.
#[cfg_attr(not(unix), allow(dead_code))]
enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
    Other,
}

/// Reads an open file, bounded: never preallocates what the file claims
/// (a sparse file can claim gigabytes), never reads past `max`.
fn read_bounded(
    mut file: impl io::Read,
    key: &str,
    max: u64,
) -> io::Result<Result<Vec<u8>, Error>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = match file.read(&mut chunk) {
            Ok(0) => return Ok(Ok(buf)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.len() as u64 + n as u64 > max {
            return Ok(Err(too_large(key, buf.len() as u64 + n as u64, max)));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn too_large(key: &str, size: u64, max: u64) -> Error {
    Error::Refused {
        key: key.to_owned(),
        reason: format!("is {size} bytes or more, over the {max}-byte limit (--max-file-size)"),
    }
}

/// A read error on one key: a passing fault (retried), unless the file
/// vanished (start over).
fn read_fault(key: &str, path: &Path, e: io::Error) -> WalkError {
    if e.kind() == io::ErrorKind::NotFound {
        return WalkError::Vanished;
    }
    WalkError::Fatal(Error::ReadKey {
        key: key.to_owned(),
        path: path.to_owned(),
        source: e,
    })
}

fn too_deep(root: &Path, key: &str) -> WalkError {
    WalkError::Fatal(Error::VolumeRefused {
        path: root.to_owned(),
        reason: format!("{key} is nested more than {MAX_DEPTH} directories deep"),
    })
}

#[cfg(unix)]
mod imp {
    //! Directory handles: `openat` by one name, `O_NOFOLLOW`, `fstat`.

    use std::{
        ffi::{CStr, OsStr},
        io,
        os::{fd::OwnedFd, unix::ffi::OsStrExt},
        path::Path,
    };

    use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, fstat, openat, statat};

    use super::{
        Fingerprint, Kind, RootLink, WalkError, describe, read_bounded, read_fault, too_deep,
    };
    use crate::Error;

    /// One entry, as seen through its parent's handle.
    pub(crate) struct Node<'a> {
        parent: &'a OwnedFd,
        name: &'a CStr,
        stat: Stat,
        /// The full path, for messages only (never opened).
        path: &'a Path,
        /// The name is not UTF-8: listed, never read.
        bad_name: Option<&'static str>,
    }

    impl<'a> Node<'a> {
        /// `Some` for anything but a directory.
        pub(crate) fn file(self) -> Option<Self> {
            (kind(&self.stat) != Kind::Dir).then_some(self)
        }

        // The stat fields' types differ between Unix flavours (macOS has
        // 32-bit modes, 64-bit Linux 64-bit times): the casts are needed
        // somewhere even where they are no-ops.
        #[allow(clippy::unnecessary_cast)]
        pub(crate) fn fingerprint(&self, key: &str) -> Fingerprint {
            let s = &self.stat;
            Fingerprint {
                key: key.to_owned(),
                len: s.st_size as u64,
                modified: Some((s.st_mtime as i64, s.st_mtime_nsec as u32)),
                changed: Some((s.st_ctime as i64, s.st_ctime_nsec as u32)),
                mode: s.st_mode as u32,
                inode: s.st_ino as u64,
                refused: self.bad_name.is_some() || kind(s) != Kind::File,
            }
        }

        /// The key's content, or why it is refused; `Err` to start over or
        /// stop the read (a passing fault).
        pub(crate) fn read(
            &self,
            key: &str,
            max: u64,
        ) -> Result<Result<Vec<u8>, Error>, WalkError> {
            let refuse = |kind| {
                Ok(Err(Error::Refused {
                    key: key.to_owned(),
                    reason: describe(kind).into(),
                }))
            };
            if let Some(reason) = self.bad_name {
                return Ok(Err(Error::Refused {
                    key: key.to_owned(),
                    reason: reason.into(),
                }));
            }
            if kind(&self.stat) != Kind::File {
                return refuse(kind(&self.stat));
            }
            if self.stat.st_size as u64 > max {
                return Ok(Err(super::too_large(key, self.stat.st_size as u64, max)));
            }
            // O_NONBLOCK: a FIFO that raced in after the listing must not
            // hang us; it is refused by the fstat below.
            let fd = match openat(
                self.parent,
                self.name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                // Replaced by a symlink since it was listed: refused, never
                // followed.
                Err(rustix::io::Errno::LOOP) => return refuse(Kind::Symlink),
                Err(e) => return Err(read_fault(key, self.path, e.into())),
            };
            // What was opened, not what was listed.
            match fresh_mode(&fd) {
                Ok(mode) if kind_of(mode) != Kind::File => return refuse(kind_of(mode)),
                Ok(_) => {}
                Err(e) => return Err(read_fault(key, self.path, e.into())),
            }
            read_bounded(std::fs::File::from(fd), key, max)
                .map_err(|e| read_fault(key, self.path, e))
        }
    }

    /// The opened file's mode, with its attributes fetched from the
    /// filesystem itself. A FUSE client (bindfs, gVisor's gofer, virtiofs
    /// with caching) keeps the attributes of anyone's lookup for a while and
    /// ends reads at the size it remembers: a file looked up between the
    /// writer's create and write (Kubernetes' atomic_writer.go writes each
    /// file of the new directory before the swap) would read short, as an
    /// "invalid" version. `AT_STATX_FORCE_SYNC` makes the kernel ask the
    /// filesystem again (fuse_update_get_attr), which also drops pages
    /// cached at the old size. Local filesystems ignore the flag. Elsewhere
    /// there is no way to force fresh attributes: `fstat`. (One function
    /// with both bodies, so that the mutation run, on Linux, names only
    /// code that is built there.)
    #[allow(clippy::unnecessary_cast)]
    fn fresh_mode(fd: &OwnedFd) -> rustix::io::Result<u32> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            use rustix::fs::{StatxFlags, statx};
            match statx(
                fd,
                c"",
                AtFlags::EMPTY_PATH | AtFlags::STATX_FORCE_SYNC,
                StatxFlags::TYPE.union(StatxFlags::SIZE),
            ) {
                Ok(s) => Ok(u32::from(s.stx_mode)),
                // Kernels before 4.11, and sandboxes whose seccomp filter
                // predates statx: the cached attributes are all there is.
                Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => {
                    fstat(fd).map(|s| s.st_mode as u32)
                }
                Err(e) => Err(e),
            }
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            fstat(fd).map(|s| s.st_mode as u32)
        }
    }

    fn kind(s: &Stat) -> Kind {
        #[allow(clippy::unnecessary_cast)]
        kind_of(s.st_mode as u32)
    }

    fn kind_of(mode: u32) -> Kind {
        match FileType::from_raw_mode(mode as _) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => Kind::Device,
            _ => Kind::Other,
        }
    }

    /// Why a name (or a key, elements joined by `/`) is refused, if it is:
    /// not UTF-8 anywhere; in a ConfigMap's data directory, anything
    /// Kubernetes never allows in a key (each path element
    /// `[-._a-zA-Z0-9]+`), so that no key name can change what a shell
    /// parses or forge an output line.
    fn name_refused(name: &[u8], root_link: RootLink) -> Option<&'static str> {
        match std::str::from_utf8(name) {
            Err(_) => Some("name is not valid UTF-8"),
            Ok(n)
                if root_link == RootLink::Refuse
                    && !n.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')
                    }) =>
            {
                Some(
                    "name has characters Kubernetes never allows in a key (only letters, digits, '-', '_' and '.')",
                )
            }
            Ok(_) => None,
        }
    }

    /// `ELOOP`: what `O_NOFOLLOW` answers for a symlink.
    fn libc_eloop() -> i32 {
        rustix::io::Errno::LOOP.raw_os_error()
    }

    fn swapped(root: &Path, what: &str) -> WalkError {
        WalkError::Fatal(Error::VolumeRefused {
            path: root.to_owned(),
            reason: format!("{what} (swapped in after it was checked); not followed"),
        })
    }

    /// The walk's root: as given, or (for a data directory) by its one name
    /// under its parent's handle with `O_NOFOLLOW`.
    fn open_root(root: &Path, root_link: RootLink) -> io::Result<OwnedFd> {
        let c = |p: &Path| {
            std::ffi::CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::NotFound))
        };
        match (root_link, root.parent(), root.file_name()) {
            (RootLink::Refuse, Some(parent), Some(name)) => {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                let parent_fd = open_dir(None, &c(parent)?)?;
                open_dir(Some(&parent_fd), &c(Path::new(name))?)
            }
            _ => open_dir(None, &c(root)?),
        }
    }

    pub(super) fn open_dir(parent: Option<&OwnedFd>, name: &CStr) -> io::Result<OwnedFd> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(match parent {
            // By one name under a handle: never through a symlink.
            Some(parent) => openat(parent, name, flags | OFlags::NOFOLLOW, Mode::empty())?,
            // The root as given (the volume path itself may be a link).
            None => openat(rustix::fs::CWD, name, flags, Mode::empty())?,
        })
    }

    /// Visits every entry under `root`, depth first, skipping names that
    /// start with `..` (the kubelet's own bookkeeping).
    pub(crate) fn walk(
        root: &Path,
        root_link: RootLink,
        visit: &mut dyn FnMut(String, Node<'_>) -> Result<(), WalkError>,
    ) -> Result<(), WalkError> {
        let root_fd = match open_root(root, root_link) {
            Ok(fd) => fd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
            // O_NOFOLLOW met a link, or O_DIRECTORY something else: what
            // was checked was swapped. Refused, never followed.
            Err(e) if e.raw_os_error() == Some(libc_eloop()) => {
                return Err(swapped(root, "is a symlink, not a data directory"));
            }
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
                return Err(swapped(root, "is not a directory"));
            }
            Err(e) => return Err(Error::io(root, "cannot open directory", e).into()),
        };
        // Each frame: a directory's handle, its key prefix, its entries.
        let mut stack: Vec<(OwnedFd, String, Vec<std::ffi::CString>)> = Vec::new();
        let names = list(&root_fd, root)?;
        stack.push((root_fd, String::new(), names));
        loop {
            let depth = stack.len();
            let Some((fd, prefix, names)) = stack.last_mut() else {
                break;
            };
            let Some(name) = names.pop() else {
                stack.pop();
                continue;
            };
            let lossy = String::from_utf8_lossy(name.as_bytes());
            let key = if prefix.is_empty() {
                lossy.to_string()
            } else {
                format!("{prefix}/{lossy}")
            };
            let path = root.join(OsStr::from_bytes(key.as_bytes()));
            // The whole key: a file under a refused directory name is too.
            let bad_name = name_refused(name.as_bytes(), root_link)
                .or_else(|| name_refused(key.as_bytes(), root_link));
            let stat = match statat(&*fd, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(s) => s,
                Err(rustix::io::Errno::NOENT) => return Err(WalkError::Vanished),
                Err(e) => return Err(read_fault(&key, &path, e.into())),
            };
            let is_dir = kind(&stat) == Kind::Dir;
            if is_dir && depth > super::MAX_DEPTH {
                return Err(too_deep(root, &key));
            }
            let node = Node {
                parent: fd,
                name: name.as_c_str(),
                stat,
                path: &path,
                bad_name,
            };
            if !is_dir {
                visit(key, node)?;
                continue;
            }
            // A directory is visited as it was looked at, before it is
            // opened: what happens to it in between (a writer, or a test,
            // swapping it) is met by the open below.
            visit(key.clone(), node)?;
            let sub = match open_dir(Some(fd), name.as_c_str()) {
                Ok(sub) => sub,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(WalkError::Vanished);
                }
                // Swapped for a symlink (ELOOP) or a file (ENOTDIR) since
                // the stat: the writer is at work; start over.
                Err(e)
                    if [rustix::io::Errno::LOOP, rustix::io::Errno::NOTDIR]
                        .iter()
                        .any(|errno| e.raw_os_error() == Some(errno.raw_os_error())) =>
                {
                    return Err(WalkError::Vanished);
                }
                Err(e) => return Err(read_fault(&key, &path, e)),
            };
            let sub_names = list(&sub, &path)?;
            stack.push((sub, key, sub_names));
        }
        Ok(())
    }

    /// The names in a directory, `..`-prefixed ones left out, in reverse
    /// order (popped from the end, so visited in order).
    fn list(fd: &OwnedFd, path: &Path) -> Result<Vec<std::ffi::CString>, WalkError> {
        let dup = rustix::io::dup(fd).map_err(|e| read_fault("", path, e.into()))?;
        let dir = match Dir::new(dup) {
            Ok(dir) => dir,
            Err(e) => return Err(Error::io(path, "cannot list directory", e.into()).into()),
        };
        let mut names = Vec::new();
        for entry in dir {
            let entry = match entry {
                Ok(entry) => entry,
                Err(rustix::io::Errno::NOENT) => return Err(WalkError::Vanished),
                Err(e) => return Err(Error::io(path, "cannot list directory", e.into()).into()),
            };
            let name = entry.file_name();
            if name.to_bytes().starts_with(b"..") || name.to_bytes() == b"." {
                continue;
            }
            names.push(name.to_owned());
        }
        names.sort_unstable_by(|a, b| b.cmp(a));
        Ok(names)
    }
}

// Elsewhere (Windows): paths, in their own file, which the mutation run
// (scripts/mutants) leaves out: it runs on Linux, where this is not built.
#[cfg(not(unix))]
#[path = "walk_windows.rs"]
mod imp;

/// Races that only a writer working between the walk's look at an entry
/// (its `lstat`) and the read (its `open`) can bring: driven here through
/// the walk itself, swapping the entry at exactly that point.
#[cfg(test)]
#[cfg(unix)]
mod tests {
    use std::{fs, path::Path, sync::mpsc, time::Duration};

    use super::*;

    /// Only reached when something is broken (a read blocked on a FIFO).
    const DEADLINE: Duration = Duration::from_secs(30);

    /// Walks `root` reading every key, calling `swap` with each key after
    /// the walk has looked at it and before it is opened.
    fn read_with_swap(root: &Path, swap: &mut dyn FnMut(&str)) -> Entries {
        read_capped(root, 1 << 20, swap)
    }

    /// [`read_with_swap`], refusing files over `max` bytes.
    fn read_capped(root: &Path, max: u64, swap: &mut dyn FnMut(&str)) -> Entries {
        let mut entries = Entries::new();
        imp::walk(root, RootLink::Follow, &mut |key, node| {
            let Some(node) = node.file() else {
                return Ok(());
            };
            swap(&key);
            let content = node.read(&key, max)?;
            entries.insert(key, content);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e:?}"));
        entries
    }

    /// Replaces `path` atomically (rename) with what `make` creates beside it.
    fn swap_in(path: &Path, make: impl FnOnce(&Path)) {
        let tmp = path.with_file_name("..swap");
        make(&tmp);
        fs::rename(&tmp, path).unwrap();
    }

    fn mkfifo(path: &Path) {
        #[cfg(target_os = "linux")]
        rustix::fs::mkfifoat(rustix::fs::CWD, path, 0o644.into()).unwrap();
        #[cfg(not(target_os = "linux"))]
        assert!(
            std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .unwrap()
                .success()
        );
    }

    fn refusal(entries: &Entries, key: &str) -> String {
        match &entries[key] {
            Ok(bytes) => panic!("{key} was read ({} bytes), not refused", bytes.len()),
            Err(e) => e.to_string(),
        }
    }

    /// The walk on its own thread, within the deadline. If it blocks
    /// (opening a FIFO no one writes), a writer is opened on `fifo` to let
    /// it go, and the test fails.
    fn read_within_deadline(root: &Path, fifo: &Path) -> Entries {
        let (tx, rx) = mpsc::channel();
        let (root, fifo) = (root.to_owned(), fifo.to_owned());
        let fifo_path = fifo.clone();
        std::thread::spawn(move || {
            let entries = read_with_swap(&root, &mut |key| {
                if key == "config.json" {
                    swap_in(&fifo_path, mkfifo);
                }
            });
            let _ = tx.send(entries);
        });
        match rx.recv_timeout(DEADLINE) {
            Ok(entries) => entries,
            Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the read panicked"),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Non-blocking: with no reader blocked in open, this fails
                // (ENXIO) instead of waiting for one.
                let _writer = rustix::fs::open(
                    &fifo,
                    rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::NONBLOCK,
                    rustix::fs::Mode::empty(),
                );
                panic!("the read blocked on a FIFO swapped in after the type check");
            }
        }
    }

    #[test]
    fn a_fifo_swapped_in_after_listing_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("config.json");
        fs::write(&key, "{}").unwrap();
        // A FIFO with no writer reads as empty when opened non-blocking:
        // only the check of what was opened keeps it from being a key.
        let entries = read_within_deadline(tmp.path(), &key);
        let reason = refusal(&entries, "config.json");
        assert!(reason.contains("FIFO"), "{reason}");
    }

    #[test]
    fn a_fifo_swapped_in_after_the_type_check_does_not_block() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("config.json");
        fs::write(&key, "{}").unwrap();
        fs::write(tmp.path().join("other"), "x").unwrap();
        let entries = read_within_deadline(tmp.path(), &key);
        assert!(entries["config.json"].is_err());
        assert_eq!(
            entries["other"].as_deref().unwrap(),
            b"x",
            "the walk went on"
        );
    }

    #[test]
    fn a_key_swapped_for_a_symlink_after_listing_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("data");
        fs::create_dir(&root).unwrap();
        let outside = tmp.path().join("outside");
        let marker = format!("OUTSIDE-{}", fastrand::u64(..));
        fs::write(&outside, &marker).unwrap();
        let key = root.join("config.json");
        fs::write(&key, "{}").unwrap();
        let entries = read_with_swap(&root, &mut |_| {
            swap_in(&key, |p| std::os::unix::fs::symlink(&outside, p).unwrap());
        });
        let reason = refusal(&entries, "config.json");
        assert!(reason.contains("symlink"), "{reason}");
    }

    /// A directory is opened by one name under its parent's handle, only
    /// if it is a directory (O_DIRECTORY) and never through a symlink
    /// (O_NOFOLLOW): what was swapped in after the walk's look fails.
    #[test]
    fn a_directory_is_opened_only_if_it_is_one_and_never_through_a_link() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir(tmp.path().join("dir")).unwrap();
        fs::write(tmp.path().join("file"), "x").unwrap();
        std::os::unix::fs::symlink("dir", tmp.path().join("link")).unwrap();
        let root = imp::open_dir(
            None,
            &std::ffi::CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap(),
        )
        .unwrap();
        assert!(imp::open_dir(Some(&root), c"dir").is_ok());
        // ENOTDIR for both on Linux (O_DIRECTORY is checked first), ELOOP
        // for the link elsewhere: the walk starts over on either.
        for name in [c"file", c"link"] {
            let err = imp::open_dir(Some(&root), name).expect_err("opened");
            assert!(
                [rustix::io::Errno::NOTDIR, rustix::io::Errno::LOOP]
                    .iter()
                    .any(|errno| err.raw_os_error() == Some(errno.raw_os_error())),
                "{name:?}: {err}"
            );
        }
    }

    /// Only the selected keys are read; every key is listed.
    #[test]
    fn only_the_selected_keys_are_read_and_all_are_listed() {
        let tmp = tempfile::tempdir().unwrap();
        for key in ["a", "b", "c"] {
            fs::write(tmp.path().join(key), key).unwrap();
        }
        let keys = ["a".to_owned(), "c".to_owned()];
        let walked = read(
            tmp.path(),
            RootLink::Follow,
            Select::Keys(&keys),
            Limits::default(),
            true,
            &mut || {},
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(walked.entries.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(walked.names, ["a", "b", "c"]);
    }

    /// A data directory swapped for a symlink (to a real directory) or a
    /// file after the read checked it is refused when the walk opens it,
    /// never followed and never taken for a passing fault: Linux answers
    /// ENOTDIR for both (O_DIRECTORY with O_NOFOLLOW), macOS ELOOP for
    /// the link.
    #[test]
    fn a_data_directory_swapped_for_a_link_or_a_file_after_its_check_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("config.json"), "{}").unwrap();
        let link = tmp.path().join("..2020_01_01_00_00_00.1");
        std::os::unix::fs::symlink("real", &link).unwrap();
        let file = tmp.path().join("..2020_01_01_00_00_00.2");
        fs::write(&file, "a file").unwrap();
        for (root, reason) in [(&link, "swapped in"), (&file, "is not a directory")] {
            let mut visited = Vec::new();
            let result = imp::walk(root, RootLink::Refuse, &mut |key, _| {
                visited.push(key);
                Ok(())
            });
            match result {
                Err(WalkError::Fatal(e @ Error::VolumeRefused { .. })) => {
                    assert!(e.to_string().contains(reason), "{e}")
                }
                other => panic!("{}: {other:?}", root.display()),
            }
            assert!(visited.is_empty(), "followed: {visited:?}");
        }
    }

    /// A nested directory swapped for a symlink or a file, or removed,
    /// after the walk looked at it and before it opens it is the writer at
    /// work: the read starts over (Vanished), never a fault, never followed.
    #[test]
    fn a_directory_swapped_after_the_walk_looked_at_it_is_read_again() {
        for swap in ["link", "file", "gone"] {
            let tmp = tempfile::tempdir().unwrap();
            let sub = tmp.path().join("sub");
            fs::create_dir(&sub).unwrap();
            fs::write(sub.join("k"), "v").unwrap();
            let elsewhere = tmp.path().join("..elsewhere");
            fs::create_dir(&elsewhere).unwrap();
            fs::write(elsewhere.join("k"), "outside").unwrap();
            let mut visited = Vec::new();
            let result = imp::walk(tmp.path(), RootLink::Follow, &mut |key, _| {
                if key == "sub" {
                    fs::remove_dir_all(&sub).unwrap();
                    match swap {
                        "link" => std::os::unix::fs::symlink("..elsewhere", &sub).unwrap(),
                        "file" => fs::write(&sub, "a file").unwrap(),
                        _ => {}
                    }
                }
                visited.push(key);
                Ok(())
            });
            assert!(
                matches!(result, Err(WalkError::Vanished)),
                "{swap}: {result:?}"
            );
            assert_eq!(visited, ["sub"], "{swap}");
        }
    }

    /// Sockets and devices are refused, each named for what it is.
    #[cfg(target_os = "linux")]
    #[test]
    fn sockets_and_devices_are_refused_as_what_they_are() {
        let tmp = tempfile::tempdir().unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(tmp.path().join("sock")).unwrap();
        let device = rustix::fs::mknodat(
            rustix::fs::CWD,
            tmp.path().join("null"),
            rustix::fs::FileType::CharacterDevice,
            0o644.into(),
            rustix::fs::makedev(1, 3),
        );
        let entries = read_with_swap(tmp.path(), &mut |_| {});
        let reason = refusal(&entries, "sock");
        assert!(reason.contains("is a socket"), "{reason}");
        match device {
            Ok(()) => {
                let reason = refusal(&entries, "null");
                assert!(reason.contains("is a device"), "{reason}");
            }
            // Without CAP_MKNOD (not root, or a container without it).
            Err(e) => eprintln!("SKIPPED the device case: mknod: {e}"),
        }
    }

    /// A key of exactly the cap is read whole, by the size it claims and by
    /// what it holds.
    #[test]
    fn a_key_of_exactly_max_file_size_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("k"), vec![b'x'; 1000]).unwrap();
        let entries = read_capped(tmp.path(), 1000, &mut |_| {});
        assert_eq!(entries["k"].as_deref().unwrap().len(), 1000);
        let reason = refusal(&read_capped(tmp.path(), 999, &mut |_| {}), "k");
        assert!(reason.contains("is 1000 bytes"), "{reason}");
    }

    /// A file that claims more than the cap is refused by what it claims,
    /// without being read: the message gives its claimed size.
    #[test]
    fn a_sparse_key_over_the_cap_is_refused_without_reading_it() {
        let tmp = tempfile::tempdir().unwrap();
        fs::File::create(tmp.path().join("k"))
            .unwrap()
            .set_len(2 << 30)
            .unwrap();
        let reason = refusal(&read_capped(tmp.path(), 1 << 20, &mut |_| {}), "k");
        assert!(reason.contains("is 2147483648 bytes"), "{reason}");
    }

    /// A key that grew past the cap after the walk looked at it (its size
    /// said it fitted) is refused by the bounded read, which stops at the
    /// cap and says how much it had.
    #[test]
    fn a_key_that_grew_after_listing_is_refused_at_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let key = tmp.path().join("k");
        fs::write(&key, "small").unwrap();
        let entries = read_capped(tmp.path(), 1000, &mut |_| {
            swap_in(&key, |p| fs::write(p, vec![b'x'; 5000]).unwrap());
        });
        let reason = refusal(&entries, "k");
        assert!(reason.contains("is 5000 bytes or more"), "{reason}");
    }

    fn fingerprint(modified: Option<(i64, u32)>, changed: Option<(i64, u32)>) -> Fingerprint {
        Fingerprint {
            key: "k".into(),
            len: 0,
            modified,
            changed,
            mode: 0,
            inode: 0,
            refused: false,
        }
    }

    fn at(secs: u64, millis: u64) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_millis(millis)
    }

    /// Fine timestamps are unconfirmed for 100 ms, whole-second ones for
    /// 2 s, from the later of mtime and ctime; no timestamp, or a clock
    /// before 1970, is always unconfirmed.
    #[test]
    fn a_fingerprint_is_racy_within_the_timestamp_granularity() {
        let fine = fingerprint(Some((1000, 500_000_000)), None);
        assert!(fine.is_racy(at(1000, 599)));
        assert!(!fine.is_racy(at(1000, 600)));
        let coarse = fingerprint(Some((1000, 0)), None);
        assert!(coarse.is_racy(at(1001, 999)));
        assert!(!coarse.is_racy(at(1002, 0)));
        // ctime later than mtime (a chmod) counts from the ctime.
        let chmodded = fingerprint(Some((1000, 500_000_000)), Some((1005, 500_000_000)));
        assert!(chmodded.is_racy(at(1005, 550)));
        assert!(!chmodded.is_racy(at(1005, 600)));
        assert!(fingerprint(None, None).is_racy(at(2000, 0)));
        assert!(fine.is_racy(std::time::UNIX_EPOCH - Duration::from_secs(1)));
    }
}
