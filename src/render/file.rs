//! One file replaced atomically: a hidden temporary file beside it,
//! written in full and `fsync`ed, renamed over it, then its directory
//! `fsync`ed. Both [`Renderer::render_file`] and the directory render
//! write through here, so that every file gets the same guarantee.

use std::{
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use super::Renderer;
use crate::{Error, Result};

impl Renderer {
    /// Whether `path` is a regular file holding `bytes` with our mode.
    pub(super) fn holds(&self, path: &Path, bytes: &[u8]) -> bool {
        holds(path, bytes, self.mode)
    }

    /// Replaces `path` with `bytes`, with our mode.
    pub(super) fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        replace(path, bytes, self.mode)
    }
}

/// Whether `path` is a regular file holding `bytes` with `mode`.
pub(super) fn holds(path: &Path, bytes: &[u8], mode: u32) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    if !meta.is_file() || meta.len() != bytes.len() as u64 || !mode_matches(&meta, mode) {
        return false;
    }
    fs::read(path).is_ok_and(|old| old == bytes)
}

#[cfg(unix)]
fn mode_matches(meta: &fs::Metadata, mode: u32) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o7777 == mode & 0o7777
}

#[cfg(not(unix))]
fn mode_matches(_meta: &fs::Metadata, _mode: u32) -> bool {
    true
}

/// Temp file in the same directory, given `mode`, written, synced, renamed
/// over `path`. On failure the temp file is removed and `path` is as it was.
pub(super) fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let (temp, mut file) = create_temp(path)?;
    let written = (|| {
        // The mode before the content: a secret is never, even for a
        // moment, in a file wider than its own mode (whoever opens it
        // then keeps what they opened).
        set_mode(&file, mode)?;
        file.write_all(bytes)?;
        // The data must be on disk before the name points at it, or a
        // crash could leave the new name on an empty file.
        file.sync_all()
    })();
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(
            path,
            "cannot write the new version (to a temporary file beside it)",
            e,
        ));
    }
    if let Err(e) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(Error::io(
            path,
            "cannot rename the new version (a temporary file beside it) over it",
            e,
        ));
    }
    Ok(())
}

#[cfg(unix)]
fn set_mode(file: &fs::File, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // After creation: the umask applies to create's mode, not to this.
    file.set_permissions(fs::Permissions::from_mode(mode & 0o7777))
}

#[cfg(not(unix))]
fn set_mode(_file: &fs::File, _mode: u32) -> io::Result<()> {
    Ok(())
}

/// The directory `path` is in (`.` for a bare name).
pub(super) fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

const TEMP_FAILED: &str = "cannot create a temporary file beside it";

/// A new hidden file beside `path`, created exclusively (never someone
/// else's). Errors name `path`.
fn create_temp(path: &Path) -> Result<(PathBuf, fs::File)> {
    let dir = parent_of(path);
    let mut last = None;
    for _ in 0..16 {
        let name = format!(
            "..configmapwatch-{}-{:016x}.tmp",
            std::process::id(),
            fastrand::u64(..)
        );
        let temp = dir.join(name);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        // Owner-only from its creation: it is about to hold the content,
        // and its final mode is set before a byte is written.
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(path, TEMP_FAILED, e)),
        }
    }
    Err(Error::io(path, TEMP_FAILED, last.expect("the loop ran")))
}

/// Makes the renames in `dir` durable. Failing to is logged, not an error:
/// the new file is already what readers see.
pub(super) fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        log::debug!("{}: cannot fsync directory: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::super::{FileOutcome, render_file, tests::listing};

    #[test]
    fn render_file_writes_replaces_and_skips_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.yaml");
        assert_eq!(render_file(&path, b"one").unwrap(), FileOutcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mtime = fs::metadata(&path).unwrap().modified().unwrap();
        assert_eq!(render_file(&path, b"one").unwrap(), FileOutcome::Unchanged);
        assert_eq!(fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        assert_eq!(render_file(&path, b"two!").unwrap(), FileOutcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"two!");
        assert_eq!(render_file(&path, b"").unwrap(), FileOutcome::Written);
        assert_eq!(fs::read(&path).unwrap(), b"");
        // No temporary file is left behind.
        assert_eq!(listing(dir.path()), ["out.yaml"]);
    }

    #[test]
    fn render_file_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/out.yaml");
        let err = render_file(&path, b"x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot create a temporary file beside it",
                path.display()
            )
        );
        // The OS's own words (Windows says "cannot find the path").
        #[cfg(unix)]
        assert!(err.chain().contains("No such file"), "{}", err.chain());
    }

    #[cfg(unix)]
    #[test]
    fn the_mode_is_set_exactly_and_a_mode_change_rewrites() {
        use std::{os::unix::fs::PermissionsExt, path::Path};

        use super::super::{MANIFEST, Renderer, render_dir};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        render_file(&path, b"s").unwrap();
        assert_eq!(mode(&path), 0o644);
        let private = Renderer::new().with_mode(0o600);
        assert_eq!(
            private.render_file(&path, b"s").unwrap(),
            FileOutcome::Written
        );
        assert_eq!(mode(&path), 0o600);
        // The manifest is private whatever the files' mode.
        render_dir(dir.path(), [("k", "v")]).unwrap();
        assert_eq!(mode(&dir.path().join("k")), 0o644);
        assert_eq!(mode(&dir.path().join(MANIFEST)), 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn a_symlink_at_the_path_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        fs::write(&target, b"theirs").unwrap();
        let link = dir.path().join("out");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        render_file(&link, b"ours").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        assert!(fs::symlink_metadata(&link).unwrap().is_file());
    }
}
