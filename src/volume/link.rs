//! Reading and validating the `..data` symlink: the only thing an idle tick
//! touches, so it reads into a fixed buffer with one syscall and no heap
//! allocation (on Unix).

use std::{io, path::Path};

/// Longest target we compare in place. Kubelet targets are about 31 bytes;
/// anything longer than this is refused by validation anyway.
const TARGET_MAX: usize = 255;

/// What `readlink(<dir>/..data)` found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum LinkRead<'a> {
    /// The target's bytes.
    Target(&'a [u8]),
    /// No `..data` (or no directory at all).
    Missing,
    /// `..data` exists but is not a symlink.
    NotALink,
    /// The target is longer than [`TARGET_MAX`]: never a kubelet name.
    TooLong,
}

/// The `..data` path prepared once, with a reusable buffer, so that each
/// poll is a single `readlink` and a byte comparison.
#[derive(Debug)]
pub(crate) struct DataLink {
    #[cfg(unix)]
    cpath: std::ffi::CString,
    #[cfg(not(unix))]
    path: std::path::PathBuf,
    buf: Vec<u8>,
}

impl DataLink {
    pub(crate) fn new(dir: &Path) -> Self {
        let path = dir.join("..data");
        DataLink {
            #[cfg(unix)]
            cpath: {
                use std::os::unix::ffi::OsStrExt;
                // A path with NUL names no file; the empty path reads as
                // "missing" just the same.
                std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
            },
            #[cfg(not(unix))]
            path,
            buf: vec![0; TARGET_MAX + 1],
        }
    }

    /// One `readlink`. The returned slice borrows the internal buffer.
    pub(crate) fn read(&mut self) -> io::Result<LinkRead<'_>> {
        #[cfg(unix)]
        let result =
            rustix::fs::readlinkat_raw(rustix::fs::CWD, self.cpath.as_c_str(), &mut self.buf[..])
                .map_err(io::Error::from);
        #[cfg(not(unix))]
        let result = std::fs::read_link(&self.path).map(|target| {
            let s = target.to_string_lossy();
            let n = s.len().min(self.buf.len());
            self.buf[..n].copy_from_slice(&s.as_bytes()[..n]);
            n
        });
        match result {
            Ok(n) if n > TARGET_MAX => Ok(LinkRead::TooLong),
            Ok(n) => Ok(LinkRead::Target(&self.buf[..n])),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(LinkRead::Missing),
            // ENOTDIR: the volume path is a file; same as "no ..data here".
            Err(e) if e.kind() == io::ErrorKind::NotADirectory => Ok(LinkRead::Missing),
            // EINVAL on Unix, ERROR_NOT_A_REPARSE_POINT (4390) on Windows.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput || e.raw_os_error() == Some(4390) => {
                Ok(LinkRead::NotALink)
            }
            Err(e) => Err(e),
        }
    }
}

/// Why a `..data` target is not one the kubelet would write, if it is not.
///
/// A valid target is one plain path component starting with `..`: never
/// absolute, never with a separator, never `..` itself, never one of the
/// writer's own link names. This is what keeps a hostile volume from
/// pointing the reader at `/etc` or `../outside`.
pub(crate) fn check_target(target: &[u8]) -> Result<&str, &'static str> {
    let s = std::str::from_utf8(target).map_err(|_| "not valid UTF-8")?;
    if s.is_empty() {
        return Err("empty target");
    }
    if s.starts_with('/') || s.starts_with('\\') || s.as_bytes().get(1) == Some(&b':') {
        return Err("absolute paths are never followed");
    }
    if s.contains(['/', '\\']) {
        return Err("must be a single path component");
    }
    if s.contains('\0') {
        return Err("contains NUL");
    }
    if s == ".." || s == "." {
        return Err("points outside the volume");
    }
    if !s.starts_with("..") {
        return Err("kubelet data directories start with '..'");
    }
    if s == "..data" {
        return Err("points to itself (a symlink loop)");
    }
    // Names are data: a kubelet names its data directories `..` and a
    // timestamp with a numeric suffix. Anything else (a space, a quote,
    // `$(...)`, a newline) is refused, so that no name from the volume can
    // change what a shell running a `{}` command parses, or forge a line.
    if !s[2..]
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        return Err(
            "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
        );
    }
    if s == "..data_tmp" {
        return Err("points to the writer's temporary link");
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubelet_names() {
        for ok in [
            "..2020_02_27_22_35_16.617502340",
            "..8988_09_08_00_00_00.1",
            "..x",
        ] {
            assert_eq!(check_target(ok.as_bytes()), Ok(ok));
        }
    }

    #[test]
    fn refuses_everything_else_saying_why() {
        for (bad, why) in [
            ("/etc", "absolute paths are never followed"),
            ("\\x", "absolute paths are never followed"),
            ("C:\\x", "absolute paths are never followed"),
            ("C:x", "absolute paths are never followed"),
            ("../outside", "must be a single path component"),
            ("..a/b", "must be a single path component"),
            ("..a\\b", "must be a single path component"),
            ("..", "points outside the volume"),
            (".", "points outside the volume"),
            ("", "empty target"),
            ("..data", "points to itself (a symlink loop)"),
            ("..data_tmp", "points to the writer's temporary link"),
            ("plain", "kubelet data directories start with '..'"),
            (".x", "kubelet data directories start with '..'"),
            // Names that would be code or a forged line if ever printed
            // or put in a command.
            (
                "..x$(touch pwned)",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x`id`",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x;id",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x'q",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x y",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x\nchange ..forged",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
            (
                "..x\u{1b}[2J",
                "has characters a kubelet data directory name never has (only letters, digits, '_', '.' and '-')",
            ),
        ] {
            assert_eq!(check_target(bad.as_bytes()), Err(why), "{bad:?}");
        }
        assert_eq!(check_target(b"..\xff"), Err("not valid UTF-8"));
    }

    #[cfg(unix)]
    #[test]
    fn reads_targets_missing_links_and_non_links() {
        let dir = tempfile::tempdir().unwrap();
        let mut link = DataLink::new(dir.path());
        assert_eq!(link.read().unwrap(), LinkRead::Missing);
        std::os::unix::fs::symlink("..abc", dir.path().join("..data")).unwrap();
        assert_eq!(link.read().unwrap(), LinkRead::Target(b"..abc"));
        std::fs::remove_file(dir.path().join("..data")).unwrap();
        std::fs::write(dir.path().join("..data"), "x").unwrap();
        assert_eq!(link.read().unwrap(), LinkRead::NotALink);
        std::fs::remove_file(dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink("..".repeat(200), dir.path().join("..data")).unwrap();
        assert_eq!(link.read().unwrap(), LinkRead::TooLong);
    }

    /// The longest name a filesystem allows (255 bytes) is a target like
    /// any other; one byte more is never a kubelet name.
    #[cfg(unix)]
    #[test]
    fn a_255_byte_target_is_read_and_256_bytes_is_too_long() {
        let dir = tempfile::tempdir().unwrap();
        let mut link = DataLink::new(dir.path());
        let longest = format!("..{}", "x".repeat(253));
        std::os::unix::fs::symlink(&longest, dir.path().join("..data")).unwrap();
        assert_eq!(link.read().unwrap(), LinkRead::Target(longest.as_bytes()));
        std::fs::remove_file(dir.path().join("..data")).unwrap();
        std::os::unix::fs::symlink(format!("{longest}x"), dir.path().join("..data")).unwrap();
        assert_eq!(link.read().unwrap(), LinkRead::TooLong);
    }
}
