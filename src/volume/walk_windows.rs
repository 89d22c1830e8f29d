//! Paths, with the opened file checked: Windows has no handle-relative
//! open in std. Symlinks are refused by their metadata and by what was
//! opened.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::{Fingerprint, Kind, RootLink, WalkError, describe, read_bounded, read_fault, too_deep};
use crate::Error;

pub(crate) struct Node<'a> {
    path: PathBuf,
    meta: fs::Metadata,
    bad_name: bool,
    _lifetime: std::marker::PhantomData<&'a ()>,
}

fn kind(meta: &fs::Metadata) -> Kind {
    let t = meta.file_type();
    if t.is_symlink() {
        Kind::Symlink
    } else if t.is_dir() {
        Kind::Dir
    } else if t.is_file() {
        Kind::File
    } else {
        Kind::Other
    }
}

impl Node<'_> {
    pub(crate) fn file(self) -> Option<Self> {
        (kind(&self.meta) != Kind::Dir).then_some(self)
    }

    pub(crate) fn fingerprint(&self, key: &str) -> Fingerprint {
        let stamp = |t: io::Result<std::time::SystemTime>| {
            t.ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| (d.as_secs() as i64, d.subsec_nanos()))
        };
        Fingerprint {
            key: key.to_owned(),
            len: self.meta.len(),
            modified: stamp(self.meta.modified()),
            changed: stamp(self.meta.created()),
            mode: u32::from(self.meta.permissions().readonly()),
            inode: 0,
            refused: self.bad_name || kind(&self.meta) != Kind::File,
        }
    }

    pub(crate) fn read(&self, key: &str, max: u64) -> Result<Result<Vec<u8>, Error>, WalkError> {
        let refuse = |kind| {
            Ok(Err(Error::Refused {
                key: key.to_owned(),
                reason: describe(kind).into(),
            }))
        };
        if self.bad_name {
            return Ok(Err(Error::Refused {
                key: key.to_owned(),
                reason: "name is not valid UTF-8".into(),
            }));
        }
        if kind(&self.meta) != Kind::File {
            return refuse(kind(&self.meta));
        }
        if self.meta.len() > max {
            return Ok(Err(super::too_large(key, self.meta.len(), max)));
        }
        let file = fs::File::open(&self.path).map_err(|e| read_fault(key, &self.path, e))?;
        match file.metadata() {
            Ok(m) if !m.is_file() => return refuse(Kind::Other),
            Ok(_) => {}
            Err(e) => return Err(read_fault(key, &self.path, e)),
        }
        read_bounded(file, key, max).map_err(|e| read_fault(key, &self.path, e))
    }
}

/// Windows walks by path: the data directory was checked with
/// `symlink_metadata` just before (not a reparse point), and what is
/// opened below it is checked again; a swap in between is the window
/// handles close on Unix.
pub(crate) fn walk(
    root: &Path,
    _root_link: RootLink,
    visit: &mut dyn FnMut(String, Node<'_>) -> Result<(), WalkError>,
) -> Result<(), WalkError> {
    let mut stack = vec![(root.to_owned(), String::new(), 0usize)];
    while let Some((dir, prefix, depth)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(WalkError::Vanished),
            Err(e) => return Err(Error::io(&dir, "cannot list directory", e).into()),
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(WalkError::Vanished);
                }
                Err(e) => return Err(Error::io(&dir, "cannot list directory", e).into()),
            };
            let raw = entry.file_name();
            let lossy = raw.to_string_lossy();
            if lossy.starts_with("..") {
                continue;
            }
            let key = if prefix.is_empty() {
                lossy.to_string()
            } else {
                format!("{prefix}/{lossy}")
            };
            let bad_name = raw.to_str().is_none();
            let path = entry.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(e) => return Err(read_fault(&key, &path, e)),
            };
            if meta.is_dir() {
                if depth >= super::MAX_DEPTH {
                    return Err(too_deep(root, &key));
                }
                stack.push((path.clone(), key.clone(), depth + 1));
            }
            visit(
                key,
                Node {
                    path,
                    meta,
                    bad_name,
                    _lifetime: std::marker::PhantomData,
                },
            )?;
        }
    }
    Ok(())
}
