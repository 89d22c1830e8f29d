//! Rendering a config for a program that reads one plain file (or one plain
//! directory), not a `..data` tree: each file is replaced atomically, so
//! whoever opens it sees the previous version or the next, never an empty
//! or partial file.
//!
//! - [`render_file`] writes one file: a hidden temporary file in the same
//!   directory, written in full and `fsync`ed, then renamed over the
//!   target (then the directory is `fsync`ed, so the rename survives a
//!   crash). Unchanged content is not rewritten, so a program that watches
//!   the file's mtime is not woken for nothing.
//! - [`render_dir`] writes every key into a directory the same way, one
//!   file at a time, and removes the files a previous render wrote for keys
//!   that are gone. What it wrote is recorded in a manifest
//!   ([`MANIFEST`]) in the directory, with a hash of each file's content:
//!   a file is removed only if the manifest lists it *and* it still holds
//!   what was written. Files it did not write, or that someone changed
//!   since, are never deleted. The directory as a whole is not swapped at
//!   once: a program that reads several files may see some of the new
//!   version next to some of the old (use the `..data` volume itself when
//!   that matters).
//! - On Windows, replacing a file is not invisible to a program opening it
//!   at that instant: the open can fail (sharing violation) and should be
//!   retried. What it reads, once open, is still a whole version.
//! - [`substitute_env`] replaces `$(VAR)` and `${VAR}` with the variable's
//!   value from the environment before rendering, strictly (an unset
//!   variable is an [`Error::UnsetVariable`] naming the variable, the key
//!   and the line) or tolerantly (left as is, and counted).
//!
//! ```no_run
//! use configmapwatch::render::{EnvMode, render_file, substitute_env};
//!
//! let template = std::fs::read("/opt/config/prometheus.yaml")?;
//! let out = substitute_env("prometheus.yaml", &template, EnvMode::Strict)?;
//! render_file("/etc/prometheus/prometheus.yml", &out.bytes)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Temporary files are named `..configmapwatch-<pid>-<random>.tmp` (the
//! kubelet's `..` prefix: no key can have such a name). A crash between
//! creating one and renaming it leaves it behind; it is never the output.
//!
//! The module is split by concern: `substitute` (the `$(VAR)` rules, pure),
//! `file` (one file replaced atomically), `manifest` (what a directory
//! render wrote) and `dir` (a directory render: a plan, then its
//! application). Everything public is here or re-exported from here.

mod dir;
mod file;
mod manifest;
mod substitute;

use std::{io, path::Path};

use crate::{Error, Result, writer::DEFAULT_MODE};

pub use substitute::{
    EnvAllow, EnvMode, OWN_PREFIX, Substituted, substitute_allowed, substitute_env, substitute_with,
};

/// The manifest [`render_dir`] keeps in the output directory: which files
/// it wrote, with a hash of what it wrote. Its `..` prefix keeps it apart
/// from any key (the kubelet refuses such key names, and so does
/// [`render_dir`]).
pub const MANIFEST: &str = "..configmapwatch-rendered.json";

/// What happened to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FileOutcome {
    /// A new version replaced the file (or created it).
    Written,
    /// It already held these bytes (and mode): left untouched.
    Unchanged,
}

/// What [`render_dir`] did, key by key (sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DirReport {
    /// Keys written (new or changed).
    pub written: Vec<String>,
    /// Keys that already held their content.
    pub unchanged: Vec<String>,
    /// Files of an earlier render whose key is gone: removed.
    pub removed: Vec<String>,
    /// Files of an earlier render whose key is gone, left in place because
    /// they changed since (or are no longer regular files): no longer
    /// tracked, never touched again.
    pub kept: Vec<String>,
}

/// How files are rendered: their mode (Unix permission bits; ignored
/// elsewhere). [`render_file`] and [`render_dir`] use the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renderer {
    /// The permission bits of every file written (default 0644, the
    /// kubelet's `defaultMode`). Set exactly, whatever the umask.
    pub mode: u32,
}

impl Default for Renderer {
    fn default() -> Self {
        Renderer { mode: DEFAULT_MODE }
    }
}

/// Writes `bytes` to `path` atomically with mode 0644; see
/// [`Renderer::render_file`].
pub fn render_file(path: impl AsRef<Path>, bytes: &[u8]) -> Result<FileOutcome> {
    Renderer::default().render_file(path, bytes)
}

/// Writes every `(key, bytes)` into `dir` with mode 0644, removing what an
/// earlier render wrote for keys that are gone; see
/// [`Renderer::render_dir`].
pub fn render_dir<I, K, V>(dir: impl AsRef<Path>, files: I) -> Result<DirReport>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
    Renderer::default().render_dir(dir, files)
}

impl Renderer {
    /// The defaults: mode 0644.
    pub fn new() -> Self {
        Self::default()
    }

    /// Files get `mode` (e.g. 0o600 for a rendered secret).
    pub fn with_mode(mut self, mode: u32) -> Self {
        self.mode = mode;
        self
    }

    /// Replaces `path` with `bytes` atomically: a reader opening `path`
    /// sees the old content or the new, whole. Its directory must exist.
    /// A symlink at `path` is replaced by the file (its target is left as
    /// it is).
    pub fn render_file(&self, path: impl AsRef<Path>, bytes: &[u8]) -> Result<FileOutcome> {
        let path = path.as_ref();
        if path.file_name().is_none() {
            return Err(Error::io(
                path,
                "cannot render to a path without a file name",
                io::ErrorKind::InvalidInput.into(),
            ));
        }
        if self.holds(path, bytes) {
            return Ok(FileOutcome::Unchanged);
        }
        self.replace(path, bytes)?;
        file::sync_dir(file::parent_of(path));
        Ok(FileOutcome::Written)
    }

    /// Writes every `(key, bytes)` into `dir` (which must exist), each
    /// file atomically as [`render_file`](Self::render_file) does; nested
    /// keys (`a/b.yaml`) get their directories. Then removes the files an
    /// earlier render wrote for keys not given now, if they still hold
    /// what was written (see the [module docs](self)). Keys are checked as
    /// the kubelet checks them: relative, no `..` element, no element
    /// starting with `..`.
    pub fn render_dir<I, K, V>(&self, dir: impl AsRef<Path>, files: I) -> Result<DirReport>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        let mode = self.mode;
        let files = files.into_iter().map(|(key, bytes)| (key, bytes, mode));
        dir::render(dir.as_ref(), files, &mut file::sync_dir)
    }

    /// [`render_dir`](Self::render_dir) with each file's own mode (the
    /// mode of the key it was rendered from, see [`source_mode`]): a
    /// Secret's 0400 key stays 0400 beside a 0644 one. The renderer's own
    /// mode is not used.
    pub fn render_dir_with_modes<I, K, V>(
        &self,
        dir: impl AsRef<Path>,
        files: I,
    ) -> Result<DirReport>
    where
        I: IntoIterator<Item = (K, V, u32)>,
        K: AsRef<str>,
        V: AsRef<[u8]>,
    {
        dir::render(dir.as_ref(), files, &mut file::sync_dir)
    }
}

/// The permission bits of the file at `path` (following symlinks, as a
/// volume's key links are followed): the mode a file rendered from it
/// gets, so that it is never readable by more users than its source.
/// Only the read, write and execute bits (`0o777`) are kept: set-id and
/// sticky bits are not a key's to pass on. Elsewhere than on Unix, 0644
/// (modes are not used there).
///
/// An error (the version's directory removed by the next swap) is an
/// [`Error::Io`], a passing fault: the version is read again rather than
/// rendered with a mode that was guessed.
pub fn source_mode(path: impl AsRef<Path>) -> Result<u32> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(path, "cannot read the mode of the key to render", e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        Ok(meta.permissions().mode() & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = meta;
        Ok(DEFAULT_MODE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        fs,
        io::Read,
        path::PathBuf,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        thread,
    };

    /// The entries of `dir`, sorted, without the manifest.
    pub(super) fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != MANIFEST)
            .collect();
        names.sort();
        names
    }

    /// Version `n`: a header and trailer naming `n` around a body whose
    /// length varies with `n`, so a torn or partial read cannot pass.
    fn version(n: usize) -> Vec<u8> {
        let body = "x".repeat((n * 7919) % 20_000 + 1);
        format!("BEGIN {n}\n{body}\nEND {n}\n").into_bytes()
    }

    fn check_whole(bytes: &[u8]) -> std::result::Result<(), String> {
        let text = std::str::from_utf8(bytes).map_err(|e| e.to_string())?;
        let n: usize = text
            .strip_prefix("BEGIN ")
            .and_then(|t| t.split('\n').next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no header in {} bytes", bytes.len()))?;
        if bytes != version(n) {
            return Err(format!("version {n} is partial: {} bytes", bytes.len()));
        }
        Ok(())
    }

    /// Reader threads open and read the path in a tight loop while
    /// versions are rendered; each read must be a whole version.
    fn hammer(path: PathBuf, versions: usize, render: impl Fn(usize)) {
        if cfg!(windows) {
            // Under Wine, a file that readers keep open in a tight loop
            // cannot be renamed over at all (every attempt fails), so the
            // race this test is about never happens there.
            println!(
                "SKIPPED render::tests::hammer: under Wine a file held open by readers cannot be replaced (the renders run without them)"
            );
            // The renders themselves still run, without the readers.
            (0..=versions).for_each(&render);
            check_whole(&fs::read(&path).unwrap()).unwrap();
            return;
        }
        render(0);
        let stop = Arc::new(AtomicBool::new(false));
        let reads = Arc::new(AtomicUsize::new(0));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (path, stop, reads) = (path.clone(), stop.clone(), reads.clone());
                thread::spawn(move || {
                    let mut buf = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        buf.clear();
                        let opened =
                            fs::File::open(&path).and_then(|mut f| f.read_to_end(&mut buf));
                        match opened {
                            Ok(_) => {}
                            // Windows: an open racing the replace fails
                            // (sharing violation) and is retried; it never
                            // reads a partial file.
                            Err(_) if cfg!(windows) => continue,
                            Err(e) => panic!("the output is always there: {e}"),
                        }
                        check_whole(&buf).unwrap();
                        reads.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for n in 1..=versions {
            render(n);
        }
        stop.store(true, Ordering::Relaxed);
        for reader in readers {
            reader
                .join()
                .expect("a reader saw a partial or missing file");
        }
        assert!(reads.load(Ordering::Relaxed) > 0);
        check_whole(&fs::read(&path).unwrap()).unwrap();
    }

    #[test]
    fn a_reader_in_a_tight_loop_never_sees_an_empty_or_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        hammer(path.clone(), 300, |n| {
            assert_eq!(
                render_file(&path, &version(n)).unwrap(),
                FileOutcome::Written
            );
        });
        assert_eq!(listing(dir.path()), ["config.yaml"]);
    }

    #[test]
    fn a_reader_of_a_rendered_dir_never_sees_an_empty_or_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.yaml");
        hammer(path.clone(), 200, |n| {
            let other = if n % 2 == 0 { "even" } else { "odd" };
            render_dir(dir.path(), [("a.yaml", version(n)), (other, version(n))]).unwrap();
        });
        assert_eq!(listing(dir.path()), ["a.yaml", "even"]);
    }
}
