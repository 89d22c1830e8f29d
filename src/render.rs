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

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    fs,
    io::{self, Write},
    path::{Path, PathBuf},
};

use serde_json::{Map, Value, json};
use xxhash_rust::xxh3::xxh3_64;

use crate::{
    Error, Result,
    writer::{DEFAULT_MODE, clean_key, validate_key},
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
        sync_dir(parent_of(path));
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
        let dir = dir.as_ref();
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::io(
                    dir,
                    "render directory is not a directory",
                    io::ErrorKind::NotADirectory.into(),
                ));
            }
            Err(e) => return Err(Error::io(dir, "render directory is not there", e)),
        }
        let mut new: BTreeMap<String, V> = BTreeMap::new();
        for (key, bytes) in files {
            let key = clean_key(key.as_ref());
            validate_key(&key)?;
            if new.insert(key.clone(), bytes).is_some() {
                return Err(Error::InvalidKey {
                    key,
                    reason: "given twice",
                });
            }
        }
        // Keys that are a file in one version and a directory in another
        // would need one removed before the other is written: refused, as
        // an atomic per-file render cannot do that without a gap.
        for key in new.keys() {
            let mut prefix = String::new();
            for element in key.split('/').take(key.split('/').count() - 1) {
                prefix.push_str(element);
                if new.contains_key(&prefix) {
                    return Err(Error::InvalidKey {
                        key: key.clone(),
                        reason: "is inside another key's path",
                    });
                }
                prefix.push('/');
            }
        }

        let manifest_path = dir.join(MANIFEST);
        let old = read_manifest(&manifest_path);
        let hashes: BTreeMap<&str, u64> = new
            .iter()
            .map(|(k, v)| (k.as_str(), xxh3_64(v.as_ref())))
            .collect();

        // Before any file is written, the manifest lists every file this
        // render may leave behind (old and new content hashes alike), so a
        // crash at any point leaves nothing of ours untracked.
        let mut interim = old.clone();
        for (key, hash) in &hashes {
            interim.entry((*key).to_owned()).or_default().insert(*hash);
        }
        if interim != old {
            self.write_manifest(&manifest_path, &interim)?;
        }

        let mut report = DirReport::default();
        let mut synced_dirs = BTreeSet::from([dir.to_owned()]);
        for (key, bytes) in &new {
            let path = dir.join(key);
            if let Some(parent) = Path::new(key)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
            {
                let parent = dir.join(parent);
                fs::create_dir_all(&parent)
                    .map_err(|e| Error::io(&parent, "cannot create directory", e))?;
            }
            if self.holds(&path, bytes.as_ref()) {
                report.unchanged.push(key.clone());
            } else {
                self.replace(&path, bytes.as_ref())?;
                synced_dirs.insert(parent_of(&path).to_owned());
                report.written.push(key.clone());
            }
        }

        for (key, written) in &old {
            if new.contains_key(key) {
                continue;
            }
            let path = dir.join(key);
            match remove_if_ours(&path, written) {
                Ok(true) => {
                    remove_empty_parents(dir, key);
                    report.removed.push(key.clone());
                }
                Ok(false) => {
                    log::warn!(
                        "{}: left in place: no longer a key, but changed since it was rendered \
                         (or not a regular file); no longer tracked",
                        path.display()
                    );
                    report.kept.push(key.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(&path, "cannot remove stale rendered file", e)),
            }
        }

        let last: Manifest = hashes
            .iter()
            .map(|(k, h)| ((*k).to_owned(), BTreeSet::from([*h])))
            .collect();
        if last != interim {
            self.write_manifest(&manifest_path, &last)?;
        }
        // Every directory a rename (or a removal) happened in.
        for synced in &synced_dirs {
            sync_dir(synced);
        }
        Ok(report)
    }

    /// Whether `path` is a regular file holding `bytes` with our mode.
    fn holds(&self, path: &Path, bytes: &[u8]) -> bool {
        let Ok(meta) = fs::symlink_metadata(path) else {
            return false;
        };
        if !meta.is_file() || meta.len() != bytes.len() as u64 || !self.mode_matches(&meta) {
            return false;
        }
        fs::read(path).is_ok_and(|old| old == bytes)
    }

    #[cfg(unix)]
    fn mode_matches(&self, meta: &fs::Metadata) -> bool {
        use std::os::unix::fs::PermissionsExt;
        meta.permissions().mode() & 0o7777 == self.mode & 0o7777
    }

    #[cfg(not(unix))]
    fn mode_matches(&self, _meta: &fs::Metadata) -> bool {
        true
    }

    /// Temp file in the same directory, written, synced, renamed over
    /// `path`. On failure the temp file is removed and `path` is as it was.
    fn replace(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let (temp, mut file) = create_temp(path)?;
        let written = (|| {
            file.write_all(bytes)?;
            self.set_mode(&file)?;
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
    fn set_mode(&self, file: &fs::File) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        // After creation: the umask applies to create's mode, not to this.
        file.set_permissions(fs::Permissions::from_mode(self.mode & 0o7777))
    }

    #[cfg(not(unix))]
    fn set_mode(&self, _file: &fs::File) -> io::Result<()> {
        Ok(())
    }

    fn write_manifest(&self, path: &Path, manifest: &Manifest) -> Result<()> {
        let files: Map<String, Value> = manifest
            .iter()
            .map(|(key, hashes)| {
                let hashes: Vec<String> = hashes.iter().map(|h| format!("{h:016x}")).collect();
                (key.clone(), json!(hashes))
            })
            .collect();
        let text = json!({
            "about": "files rendered by configmapwatch, with the xxh3-64 hash of what was \
                      written; a listed file that still holds what was written is removed \
                      when its key goes away",
            "files": files,
        });
        let mut bytes = serde_json::to_vec_pretty(&text).unwrap_or_default();
        bytes.push(b'\n');
        // The manifest is ours alone: private whatever the files' mode.
        Renderer { mode: 0o600 }.replace(path, &bytes)
    }
}

/// Key -> the hashes of content this renderer may have left in it.
type Manifest = BTreeMap<String, BTreeSet<u64>>;

/// The manifest in `path`; empty if there is none. One that cannot be
/// read is treated as empty (so nothing is removed on its word), with a
/// warning. Keys that would reach outside the directory are dropped.
fn read_manifest(path: &Path) -> Manifest {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Manifest::new(),
        Err(e) => {
            log::warn!(
                "{}: cannot read ({e}); files of earlier renders are left in place",
                path.display()
            );
            return Manifest::new();
        }
    };
    let files = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v.get("files").and_then(Value::as_object).cloned());
    let Some(files) = files else {
        log::warn!(
            "{}: not a manifest this version understands; files of earlier renders are left in place",
            path.display()
        );
        return Manifest::new();
    };
    let mut manifest = Manifest::new();
    for (key, hashes) in files {
        if clean_key(&key) != key || validate_key(&key).is_err() {
            log::warn!("{}: ignoring entry {key:?}", path.display());
            continue;
        }
        let hashes: BTreeSet<u64> = hashes
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| u64::from_str_radix(h.as_str()?, 16).ok())
            .collect();
        manifest.insert(key, hashes);
    }
    manifest
}

/// Removes `path` if it is a regular file whose content hashes to one of
/// `written`; `Ok(false)` if it is something else.
fn remove_if_ours(path: &Path, written: &BTreeSet<u64>) -> io::Result<bool> {
    if !fs::symlink_metadata(path)?.is_file() {
        return Ok(false);
    }
    if !written.contains(&xxh3_64(&fs::read(path)?)) {
        return Ok(false);
    }
    fs::remove_file(path)?;
    Ok(true)
}

/// After removing `key`'s file, its directories inside `dir` that are now
/// empty (`remove_dir` refuses any that is not, whoever put what in it).
fn remove_empty_parents(dir: &Path, key: &str) {
    let mut parent = Path::new(key).parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        if fs::remove_dir(dir.join(p)).is_err() {
            break;
        }
        parent = p.parent();
    }
}

fn parent_of(path: &Path) -> &Path {
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
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
        {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(e) => return Err(Error::io(path, TEMP_FAILED, e)),
        }
    }
    Err(Error::io(path, TEMP_FAILED, last.expect("the loop ran")))
}

/// Makes the renames in `dir` durable. Failing to is logged, not an error:
/// the new file is already what readers see.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Err(e) = fs::File::open(dir).and_then(|d| d.sync_all()) {
        log::debug!("{}: cannot fsync directory: {e}", dir.display());
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// How [`substitute_env`] treats a reference to an unset variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum EnvMode {
    /// An error ([`Error::UnsetVariable`]) naming the first such variable,
    /// the key and the line: nothing is rendered.
    #[default]
    Strict,
    /// Left as it is (`$(VAR)` stays `$(VAR)`) and counted in
    /// [`Substituted::unresolved`].
    Tolerant,
}

/// A key's content after substitution.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Substituted {
    /// The content, references replaced.
    pub bytes: Vec<u8>,
    /// How many references were replaced.
    pub replaced: usize,
    /// How many references to unset variables were left as they are
    /// (always 0 in strict mode, which fails instead).
    pub unresolved: usize,
}

/// Replaces `$(VAR)` and `${VAR}` in `bytes` (the content of `key`) with
/// the environment variable's value.
///
/// The rules, chosen so that configs that use `$` for their own purposes
/// pass through untouched:
/// - `VAR` is a shell-style name: `[A-Za-z_][A-Za-z0-9_]*`. Anything else
///   between the brackets is not a reference and is left as it is, so
///   Prometheus' `${1}` and `$1`, or a shell's `$(echo x)`, stay. (A
///   shell's `$(date)` is a reference to the variable `date`: escape it as
///   `$$(date)`.)
/// - `$$(` and `$${` escape a reference: they render as `$(` and `${`
///   (Kubernetes' own `$$` escape, for the one case it is needed). Any
///   other `$$` is left as it is (Prometheus and others use `$$` as their
///   own escape).
/// - A value is inserted as it is; it is not scanned again.
///
/// The key's bytes need not be UTF-8; a value that is not is inserted as
/// the platform encodes it.
pub fn substitute_env(key: &str, bytes: &[u8], mode: EnvMode) -> Result<Substituted> {
    substitute_with(key, bytes, mode, |name| std::env::var_os(name))
}

/// [`substitute_env`] with the variables from `lookup` instead of the
/// process environment.
pub fn substitute_with(
    key: &str,
    bytes: &[u8],
    mode: EnvMode,
    mut lookup: impl FnMut(&str) -> Option<OsString>,
) -> Result<Substituted> {
    let mut out = Vec::with_capacity(bytes.len());
    let (mut replaced, mut unresolved) = (0, 0);
    let mut first_unset: Option<(String, usize)> = None;
    let mut line = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line += 1;
        }
        if b != b'$' {
            out.push(b);
            i += 1;
            continue;
        }
        let next = bytes.get(i + 1).copied();
        if next == Some(b'$') && matches!(bytes.get(i + 2), Some(b'(' | b'{')) {
            // `$$(` -> `$(`: the bracket is then copied as a plain byte.
            out.push(b'$');
            i += 2;
            continue;
        }
        let Some(name_len) = reference_at(&bytes[i..]) else {
            out.push(b);
            i += 1;
            continue;
        };
        let reference = &bytes[i..i + name_len + 3];
        // The name is ASCII by construction.
        let name = std::str::from_utf8(&reference[2..reference.len() - 1]).unwrap_or_default();
        match lookup(name) {
            Some(value) => {
                out.extend_from_slice(value.as_encoded_bytes());
                replaced += 1;
            }
            None => {
                unresolved += 1;
                first_unset.get_or_insert_with(|| (name.to_owned(), line));
                out.extend_from_slice(reference);
            }
        }
        i += reference.len();
    }
    if let (EnvMode::Strict, Some((variable, line))) = (mode, first_unset) {
        return Err(Error::UnsetVariable {
            key: key.to_owned(),
            variable,
            line,
            unresolved,
        });
    }
    Ok(Substituted {
        bytes: out,
        replaced,
        unresolved,
    })
}

/// If `s` starts with `$(NAME)` or `${NAME}`, the length of `NAME`.
fn reference_at(s: &[u8]) -> Option<usize> {
    let close = match s.get(1)? {
        b'(' => b')',
        b'{' => b'}',
        _ => return None,
    };
    let name = &s[2..];
    let len = name
        .iter()
        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
        .unwrap_or(name.len());
    let starts_well = name
        .first()
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_');
    (starts_well && name.get(len) == Some(&close)).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::{
        collections::HashMap,
        io::Read,
        sync::{
            Arc,
            atomic::{AtomicBool, AtomicUsize, Ordering},
        },
        thread,
    };

    fn vars(pairs: &[(&str, &str)]) -> impl FnMut(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn sub(text: &str, mode: EnvMode, pairs: &[(&str, &str)]) -> Result<(String, usize, usize)> {
        let s = substitute_with("k.yaml", text.as_bytes(), mode, vars(pairs))?;
        Ok((
            String::from_utf8(s.bytes).unwrap(),
            s.replaced,
            s.unresolved,
        ))
    }

    /// The entries of `dir`, sorted, without the manifest.
    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != MANIFEST)
            .collect();
        names.sort();
        names
    }

    #[test]
    fn both_reference_forms_are_replaced() {
        let pairs = [("HOST", "db.local"), ("PORT", "5432")];
        let (out, replaced, unresolved) =
            sub("url: $(HOST):${PORT}/x\n", EnvMode::Strict, &pairs).unwrap();
        assert_eq!(out, "url: db.local:5432/x\n");
        assert_eq!((replaced, unresolved), (2, 0));
    }

    #[test]
    fn strict_mode_names_variable_key_and_line() {
        let text = "a: $(SET)\nb: 1\nc: ${NOT_SET}\nd: $(ALSO_UNSET)\n";
        let err = sub(text, EnvMode::Strict, &[("SET", "x")]).unwrap_err();
        match &err {
            Error::UnsetVariable {
                key,
                variable,
                line,
                unresolved,
            } => {
                assert_eq!(
                    (key.as_str(), variable.as_str(), *line, *unresolved),
                    ("k.yaml", "NOT_SET", 3, 2)
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "key k.yaml: line 3: environment variable NOT_SET is not set \
             (and 1 more unresolved reference)"
        );
        assert_eq!(err.kind(), crate::ErrorKind::Content);
    }

    #[test]
    fn tolerant_mode_leaves_unset_references_and_counts_them() {
        let text = "a: $(SET) ${UNSET} $(UNSET)\n";
        let (out, replaced, unresolved) = sub(text, EnvMode::Tolerant, &[("SET", "x")]).unwrap();
        assert_eq!(out, "a: x ${UNSET} $(UNSET)\n");
        assert_eq!((replaced, unresolved), (1, 2));
    }

    #[test]
    fn dollars_that_are_not_references_pass_through() {
        // Prometheus relabelling, shell, a lone $, unterminated, $$ escapes
        // of other tools, a name that is not a name.
        let text = "r: ${1}:$1 $$1 $(date +%s) $ $(UNCLOSED ${A-B} $() ${} $\n";
        let (out, replaced, unresolved) = sub(text, EnvMode::Strict, &[]).unwrap();
        assert_eq!(out, text);
        assert_eq!((replaced, unresolved), (0, 0));
    }

    #[test]
    fn double_dollar_escapes_a_reference() {
        let (out, replaced, _) = sub(
            "$$(HOME) $${HOME} $(HOME)",
            EnvMode::Strict,
            &[("HOME", "/h")],
        )
        .unwrap();
        assert_eq!(out, "$(HOME) ${HOME} /h");
        assert_eq!(replaced, 1);
    }

    #[test]
    fn values_are_not_scanned_again_and_bytes_need_not_be_utf8() {
        let s = substitute_with(
            "bin",
            b"\xff$(A)\xfe",
            EnvMode::Strict,
            vars(&[("A", "$(B)")]),
        )
        .unwrap();
        assert_eq!(s.bytes, b"\xff$(B)\xfe");
    }

    #[test]
    fn the_process_environment_is_used() {
        // PATH is set in any test environment; no set_var (unsafe in a
        // threaded test binary).
        let path = std::env::var_os("PATH").expect("PATH is set");
        let s = substitute_env("k", b"p=${PATH}", EnvMode::Strict).unwrap();
        assert_eq!(s.bytes, [b"p=", path.as_encoded_bytes()].concat());
    }

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
        use std::os::unix::fs::PermissionsExt;
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

    #[test]
    fn render_dir_writes_keys_and_removes_only_its_own_stale_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("theirs.conf"), b"not ours").unwrap();
        let report = render_dir(
            d,
            [
                ("a.yaml", "a1"),
                ("b.yaml", "b1"),
                ("sub/c.yaml", "c1"),
                ("edited", "e1"),
            ],
        )
        .unwrap();
        assert_eq!(report.written, ["a.yaml", "b.yaml", "edited", "sub/c.yaml"]);
        assert_eq!(fs::read(d.join("sub/c.yaml")).unwrap(), b"c1");

        // Someone edits one of ours: it is theirs now.
        fs::write(d.join("edited"), b"hand-edited").unwrap();
        let report = render_dir(d, [("a.yaml", "a2"), ("b.yaml", "b1")]).unwrap();
        assert_eq!(report.written, ["a.yaml"]);
        assert_eq!(report.unchanged, ["b.yaml"]);
        assert_eq!(report.removed, ["sub/c.yaml"]);
        assert_eq!(report.kept, ["edited"]);
        assert_eq!(listing(d), ["a.yaml", "b.yaml", "edited", "theirs.conf"]);
        assert_eq!(fs::read(d.join("edited")).unwrap(), b"hand-edited");

        // Once kept, never touched again, even by an empty render.
        let report = render_dir(d, Vec::<(String, Vec<u8>)>::new()).unwrap();
        assert_eq!(report.removed, ["a.yaml", "b.yaml"]);
        assert!(report.kept.is_empty());
        assert_eq!(listing(d), ["edited", "theirs.conf"]);
    }

    #[test]
    fn a_same_named_file_we_did_not_write_is_replaced_but_never_removed_unless_ours() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        fs::write(d.join("x"), b"theirs").unwrap();
        // Not in the manifest: an empty render leaves it alone.
        assert!(render_dir(d, [("y", "1")]).unwrap().removed.is_empty());
        assert_eq!(fs::read(d.join("x")).unwrap(), b"theirs");
        // A key of that name takes it over; then it is ours to remove.
        render_dir(d, [("x", "ours")]).unwrap();
        assert_eq!(render_dir(d, [("y", "1")]).unwrap().removed, ["x"]);
    }

    #[test]
    fn a_tampered_manifest_cannot_reach_outside_the_directory() {
        let outer = tempfile::tempdir().unwrap();
        let d = outer.path().join("out");
        fs::create_dir(&d).unwrap();
        let victim = outer.path().join("victim");
        fs::write(&victim, b"v").unwrap();
        let hash = format!("{:016x}", xxh3_64(b"v"));
        let manifest = json!({"files": {"../victim": [hash], "/etc/passwd": [hash]}});
        fs::write(d.join(MANIFEST), manifest.to_string()).unwrap();
        let report = render_dir(&d, [("a", "1")]).unwrap();
        assert!(report.removed.is_empty(), "{report:?}");
        assert!(victim.exists());
        // A corrupt manifest: nothing removed, a fresh one written.
        fs::write(d.join(MANIFEST), b"{not json").unwrap();
        render_dir(&d, [("b", "2")]).unwrap();
        assert_eq!(listing(&d), ["a", "b"]);
        assert_eq!(render_dir(&d, [("c", "3")]).unwrap().removed, ["b"]);
    }

    #[test]
    fn bad_keys_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        for (files, why) in [
            (vec![("../x", "1")], "'..'"),
            (vec![("..manifest", "1")], "'..'"),
            (vec![("/abs", "1")], "relative"),
            (vec![("a", "1"), ("./a", "2")], "given twice"),
            (vec![("a", "1"), ("a/b", "2")], "inside another key"),
        ] {
            let err = render_dir(dir.path(), files).unwrap_err();
            assert!(matches!(err, Error::InvalidKey { .. }), "{err:?}");
            assert!(err.to_string().contains(why), "{err}");
        }
        assert!(listing(dir.path()).is_empty());
    }

    #[test]
    fn render_dir_needs_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let err = render_dir(dir.path().join("nope"), [("a", "1")]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        fs::write(dir.path().join("file"), b"").unwrap();
        let err = render_dir(dir.path().join("file"), [("a", "1")]).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}
