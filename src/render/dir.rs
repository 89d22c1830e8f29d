//! [`Renderer::render_dir`] in two stages: a [`Plan`], worked out from the
//! keys given and the manifest of the last render without touching the
//! directory, then [`apply`], which writes, removes, records and syncs.
//! What is decided can then be read (and tested) apart from how it is
//! done, and the I/O takes its directory `fsync` as a parameter, so that a
//! test can see which directories were made durable.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::{Path, PathBuf},
};

use xxhash_rust::xxh3::xxh3_64;

use super::{
    DirReport, MANIFEST,
    file::{holds, parent_of, replace},
    manifest::{Manifest, read_manifest, write_manifest},
};
use crate::{
    Error, Result,
    writer::{clean_key, validate_key},
};

/// Checks `dir`, plans the render from `files` (each with its mode) and
/// the manifest in `dir`, and applies the plan, calling `sync` on every
/// directory it changed.
pub(super) fn render<I, K, V>(
    dir: &Path,
    files: I,
    sync: &mut dyn FnMut(&Path),
) -> Result<DirReport>
where
    I: IntoIterator<Item = (K, V, u32)>,
    K: AsRef<str>,
    V: AsRef<[u8]>,
{
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
    // Keys first: a bad one is refused before anything is read or written.
    let keys = checked_keys(files)?;
    let plan = plan(keys, read_manifest(&dir.join(MANIFEST)));
    apply(dir, &plan, sync)
}

/// One file to write: its content and its mode. Hashed (and compared) by
/// its content alone: a mode change rewrites the file, but is not a new
/// content for the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Content<V> {
    bytes: V,
    mode: u32,
}

impl<V: AsRef<[u8]>> AsRef<[u8]> for Content<V> {
    fn as_ref(&self) -> &[u8] {
        self.bytes.as_ref()
    }
}

/// What one render of a directory does, decided before anything in it is
/// touched.
#[derive(Debug, PartialEq, Eq)]
struct Plan<V> {
    /// Every key given, cleaned, with its content (sorted): each is written
    /// unless its file already holds that content.
    pub write: BTreeMap<String, V>,
    /// Keys an earlier render wrote that are not given now, each with every
    /// hash it may have written: removed if the file still holds one.
    pub remove: Manifest,
    /// The manifest to record before any file is touched, when it differs
    /// from the last render's: every file this render may leave behind,
    /// old and new content alike, so that a crash at any point leaves
    /// nothing of ours untracked.
    pub interim: Option<Manifest>,
    /// The manifest to record once done (the keys given, each with its new
    /// hash), when it differs from the one already recorded.
    pub last: Option<Manifest>,
}

/// The keys of `files`, cleaned and checked as the kubelet checks them,
/// with their content and mode.
fn checked_keys<I, K, V>(files: I) -> Result<BTreeMap<String, Content<V>>>
where
    I: IntoIterator<Item = (K, V, u32)>,
    K: AsRef<str>,
{
    let mut keys: BTreeMap<String, Content<V>> = BTreeMap::new();
    for (key, bytes, mode) in files {
        let key = clean_key(key.as_ref());
        validate_key(&key)?;
        if keys.insert(key.clone(), Content { bytes, mode }).is_some() {
            return Err(Error::InvalidKey {
                key,
                reason: "given twice",
            });
        }
    }
    // Keys that are a file in one version and a directory in another
    // would need one removed before the other is written: refused, as an
    // atomic per-file render cannot do that without a gap.
    for key in keys.keys() {
        let mut prefix = String::new();
        for element in key.split('/').take(key.split('/').count() - 1) {
            prefix.push_str(element);
            if keys.contains_key(&prefix) {
                return Err(Error::InvalidKey {
                    key: key.clone(),
                    reason: "is inside another key's path",
                });
            }
            prefix.push('/');
        }
    }
    Ok(keys)
}

/// The plan for writing `keys` over a directory whose last render recorded
/// `old`. Pure: no I/O.
fn plan<V: AsRef<[u8]>>(keys: BTreeMap<String, V>, old: Manifest) -> Plan<V> {
    let last: Manifest = keys
        .iter()
        .map(|(key, bytes)| (key.clone(), BTreeSet::from([xxh3_64(bytes.as_ref())])))
        .collect();
    let mut interim = old.clone();
    for (key, hashes) in &last {
        interim.entry(key.clone()).or_default().extend(hashes);
    }
    let remove: Manifest = old
        .iter()
        .filter(|(key, _)| !keys.contains_key(*key))
        .map(|(key, hashes)| (key.clone(), hashes.clone()))
        .collect();
    Plan {
        write: keys,
        remove,
        // Compared with what is recorded at that point: the manifest on
        // disk is rewritten only when it would change.
        last: (last != interim).then_some(last),
        interim: (interim != old).then_some(interim),
    }
}

/// Carries out `plan` in `dir`: the interim manifest, then every file
/// written (or left, if it already holds its content), then stale files
/// removed, then the last manifest; then `sync` on every directory a
/// rename or a removal happened in, so that all of it survives a crash.
fn apply<V: AsRef<[u8]>>(
    dir: &Path,
    plan: &Plan<Content<V>>,
    sync: &mut dyn FnMut(&Path),
) -> Result<DirReport> {
    let manifest_path = dir.join(MANIFEST);
    if let Some(interim) = &plan.interim {
        write_manifest(&manifest_path, interim)?;
    }
    let mut report = DirReport::default();
    // The manifest's own directory, and every other one changed below.
    let mut changed = BTreeSet::from([dir.to_owned()]);
    write_files(dir, &plan.write, &mut report, &mut changed)?;
    remove_stale(dir, &plan.remove, &mut report, &mut changed)?;
    if let Some(last) = &plan.last {
        write_manifest(&manifest_path, last)?;
    }
    for directory in &changed {
        sync(directory);
    }
    Ok(report)
}

/// Writes each key's file that does not already hold its content (and
/// mode), adding the directory of each rename to `changed`.
fn write_files<V: AsRef<[u8]>>(
    dir: &Path,
    keys: &BTreeMap<String, Content<V>>,
    report: &mut DirReport,
    changed: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    for (key, bytes) in keys {
        let path = dir.join(key);
        if let Some(parent) = Path::new(key)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let parent = dir.join(parent);
            fs::create_dir_all(&parent)
                .map_err(|e| Error::io(&parent, "cannot create directory", e))?;
        }
        if holds(&path, bytes.as_ref(), bytes.mode) {
            report.unchanged.push(key.clone());
        } else {
            replace(&path, bytes.as_ref(), bytes.mode)?;
            changed.insert(parent_of(&path).to_owned());
            report.written.push(key.clone());
        }
    }
    Ok(())
}

/// Removes each stale key's file that still holds what was written, and
/// the directories that leaves empty, adding the directory of each last
/// removal to `changed`; keeps (and reports) the others.
fn remove_stale(
    dir: &Path,
    stale: &Manifest,
    report: &mut DirReport,
    changed: &mut BTreeSet<PathBuf>,
) -> Result<()> {
    for (key, written) in stale {
        let path = dir.join(key);
        match remove_if_ours(&path, written) {
            Ok(true) => {
                changed.insert(remove_empty_parents(dir, key));
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
    Ok(())
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
/// Returns the directory the last removal happened in: the one to sync
/// for all of them to survive a crash (a removed directory needs none).
fn remove_empty_parents(dir: &Path, key: &str) -> PathBuf {
    let mut parent = Path::new(key).parent();
    while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
        if fs::remove_dir(dir.join(p)).is_err() {
            return dir.join(p);
        }
        parent = p.parent();
    }
    dir.to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{render_dir, tests::listing};
    use super::*;

    fn manifest(entries: &[(&str, &[&[u8]])]) -> Manifest {
        entries
            .iter()
            .map(|(key, contents)| {
                let hashes = contents.iter().map(|c| xxh3_64(c)).collect();
                ((*key).to_owned(), hashes)
            })
            .collect()
    }

    #[test]
    fn the_plan_lists_writes_removals_and_both_manifests() {
        let old = manifest(&[("a", &[b"a1"]), ("gone", &[b"g1", b"g2"])]);
        let keys = BTreeMap::from([("a".to_owned(), "a2"), ("new".to_owned(), "n1")]);
        let plan = plan(keys.clone(), old);
        assert_eq!(plan.write, keys);
        assert_eq!(plan.remove, manifest(&[("gone", &[b"g1", b"g2"])]));
        // Before: old and new content of every file that may be left.
        assert_eq!(
            plan.interim,
            Some(manifest(&[
                ("a", &[b"a1", b"a2"]),
                ("gone", &[b"g1", b"g2"]),
                ("new", &[b"n1"]),
            ]))
        );
        assert_eq!(
            plan.last,
            Some(manifest(&[("a", &[b"a2"]), ("new", &[b"n1"])]))
        );
    }

    /// A removal is made as durable as a write: the directory each stale
    /// file was removed from is synced, and where that directory went too
    /// (left empty), the one it was removed from.
    #[test]
    fn the_parents_of_removed_nested_files_are_synced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let with_mode = |files: &[(&'static str, &'static str)]| {
            files
                .iter()
                .map(|(k, v)| (*k, *v, 0o644))
                .collect::<Vec<_>>()
        };
        let first = [
            ("top", "t"),
            ("sub/a", "a"),
            ("sub/b", "b"),
            ("x/y/z", "z"),
            ("x/w", "w"),
        ];
        render(d, with_mode(&first), &mut |_: &Path| {}).unwrap();
        let mut synced = Vec::new();
        let second = [("top", "t"), ("sub/a", "a"), ("x/w", "w")];
        let report = render(d, with_mode(&second), &mut |p: &Path| {
            synced.push(p.to_owned())
        })
        .unwrap();
        assert_eq!(report.removed, ["sub/b", "x/y/z"]);
        assert!(report.written.is_empty(), "{report:?}");
        assert!(!d.join("x/y").exists());
        // The manifest's directory; sub/b's; x/y/z's went, so x (x/y's).
        assert_eq!(synced, [d.to_owned(), d.join("sub"), d.join("x")]);
    }

    #[test]
    fn an_unchanged_render_plans_no_manifest_write() {
        let old = manifest(&[("a", &[b"a1"])]);
        let plan = plan(BTreeMap::from([("a".to_owned(), "a1")]), old);
        assert!(plan.remove.is_empty());
        assert_eq!((plan.interim, plan.last), (None, None));
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
