//! Walking a data directory and reading its keys: regular files only, never
//! following a link, never blocking on a FIFO, never reading past the size
//! cap. Shared by ConfigMap mode (walk `<dir>/<target>/`) and plain mode
//! (walk `<dir>/`), and by the writer's "has anything changed" comparison.

use std::{
    collections::BTreeMap,
    fs::{self, File},
    io::{self, Read},
    path::{Path, PathBuf},
    time::SystemTime,
};

use crate::Error;

/// The keys of one directory tree, each with its content or the reason it
/// was refused. Keys use `/` between components on every platform.
pub type Entries = BTreeMap<String, Result<Vec<u8>, Error>>;

/// Why a walk stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// Something disappeared mid-read: the writer deleted the directory we
    /// were reading. Start over from `readlink`.
    Vanished,
    /// The root itself cannot be listed.
    Fatal(Error),
}

impl From<Error> for WalkError {
    fn from(e: Error) -> Self {
        WalkError::Fatal(e)
    }
}

/// One entry found by [`walk`].
pub(crate) enum Found {
    /// A regular file to read.
    File(PathBuf),
    /// Anything else: the reason it is refused.
    Refused(String),
}

/// Visits every key under `root`, depth first, skipping names that start
/// with `..` (the kubelet's own bookkeeping).
pub(crate) fn walk(
    root: &Path,
    visit: &mut dyn FnMut(String, Found) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    let entries = match fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
        Err(e) => return Err(Error::io(root, "cannot list directory", e).into()),
    };
    walk_dir(root, entries, "", visit)
}

fn walk_dir(
    dir: &Path,
    entries: fs::ReadDir,
    prefix: &str,
    visit: &mut dyn FnMut(String, Found) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
            Err(e) => return Err(Error::io(dir, "cannot list directory", e).into()),
        };
        let raw_name = entry.file_name();
        let lossy = raw_name.to_string_lossy();
        if lossy.starts_with("..") {
            continue;
        }
        let key = if prefix.is_empty() {
            lossy.to_string()
        } else {
            format!("{prefix}/{lossy}")
        };
        if raw_name.to_str().is_none() {
            visit(key, Found::Refused("name is not valid UTF-8".into()))?;
            continue;
        }
        let file_type = match entry.file_type() {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
            Err(e) => {
                visit(key, Found::Refused(format!("cannot stat: {e}")))?;
                continue;
            }
        };
        let path = entry.path();
        if file_type.is_dir() {
            match fs::read_dir(&path) {
                Ok(sub) => walk_dir(&path, sub, &key, visit)?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
                Err(e) => visit(key, Found::Refused(format!("cannot list directory: {e}")))?,
            }
        } else if file_type.is_file() {
            visit(key, Found::File(path))?;
        } else {
            visit(key, Found::Refused(describe_non_file(&file_type).into()))?;
        }
    }
    Ok(())
}

fn describe_non_file(t: &fs::FileType) -> &'static str {
    if t.is_symlink() {
        return "is a symlink; only regular files are read (a link could lead outside the volume)";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "is a FIFO, not a regular file (reading it could block forever)";
        }
        if t.is_socket() {
            return "is a socket, not a regular file";
        }
        if t.is_block_device() || t.is_char_device() {
            return "is a device, not a regular file";
        }
    }
    "is not a regular file"
}

/// Reads every key under `root`, calling `after_key` after each one.
/// `Err(Vanished)` means start over.
pub(crate) fn read_tree(
    root: &Path,
    max_file_size: u64,
    after_key: &mut dyn FnMut(),
) -> Result<Entries, WalkError> {
    let mut out = Entries::new();
    walk(root, &mut |key, found| {
        let content = match found {
            Found::File(path) => read_key(&key, &path, max_file_size)?,
            Found::Refused(reason) => Err(Error::Refused {
                key: key.clone(),
                reason,
            }),
        };
        out.insert(key, content);
        after_key();
        Ok(())
    })?;
    Ok(out)
}

/// What plain mode compares on each tick to notice a change without reading
/// content: size, full-precision mtime and, where there is one, the inode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    key: String,
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
    refused: bool,
}

/// Lists the fingerprint of every key under `root`.
pub(crate) fn fingerprints(root: &Path) -> Result<Vec<Fingerprint>, WalkError> {
    let mut out = Vec::new();
    walk(root, &mut |key, found| {
        let fp = match found {
            Found::File(path) => match fs::symlink_metadata(&path) {
                Ok(meta) => Fingerprint {
                    key,
                    len: meta.len(),
                    modified: meta.modified().ok(),
                    inode: inode(&meta),
                    refused: false,
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
                Err(_) => Fingerprint::refused(key),
            },
            Found::Refused(_) => Fingerprint::refused(key),
        };
        out.push(fp);
        Ok(())
    })?;
    Ok(out)
}

impl Fingerprint {
    fn refused(key: String) -> Self {
        Fingerprint {
            key,
            len: 0,
            modified: None,
            inode: 0,
            refused: true,
        }
    }
}

#[cfg(unix)]
fn inode(meta: &fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

#[cfg(not(unix))]
fn inode(_: &fs::Metadata) -> u64 {
    0
}

/// Reads one key. The outer `Err` is "vanished: start over"; the inner one
/// is a per-key error to report.
fn read_key(key: &str, path: &Path, max: u64) -> Result<Result<Vec<u8>, Error>, WalkError> {
    let read_err = |source: io::Error| Error::ReadKey {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    };
    let mut file = match open_no_follow(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
        Err(e) if is_symlink_loop(&e) => {
            return Ok(Err(Error::Refused {
                key: key.to_owned(),
                reason: describe_non_file(
                    &fs::symlink_metadata(path)
                        .map_err(|_| WalkError::Vanished)?
                        .file_type(),
                )
                .into(),
            }));
        }
        Err(e) => return Ok(Err(read_err(e))),
    };
    // Check what we actually opened: the entry may have been replaced since
    // it was listed.
    let meta = match file.metadata() {
        Ok(m) => m,
        Err(e) => return Ok(Err(read_err(e))),
    };
    if !meta.is_file() {
        return Ok(Err(Error::Refused {
            key: key.to_owned(),
            reason: describe_non_file(&meta.file_type()).into(),
        }));
    }
    let too_large = |size: u64| Error::Refused {
        key: key.to_owned(),
        reason: format!("is {size} bytes, over the {max}-byte limit (--max-file-size)"),
    };
    if meta.len() > max {
        return Ok(Err(too_large(meta.len())));
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    match file
        .by_ref()
        .take(max.saturating_add(1))
        .read_to_end(&mut buf)
    {
        Ok(_) if buf.len() as u64 > max => Ok(Err(too_large(buf.len() as u64))),
        Ok(_) => Ok(Ok(buf)),
        Err(e) => Ok(Err(read_err(e))),
    }
}

#[cfg(unix)]
fn open_no_follow(path: &Path) -> io::Result<File> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: opening a FIFO that raced in after the listing must not
    // hang the reader; it is refused by the fstat check right after.
    fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits() as i32)
        .open(path)
}

#[cfg(not(unix))]
fn open_no_follow(path: &Path) -> io::Result<File> {
    File::open(path)
}

fn is_symlink_loop(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error())
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}
