//! The manifest a directory render keeps beside its files
//! ([`MANIFEST`](super::MANIFEST)): which keys it wrote, with the xxh3-64
//! hash of each content written, so that a later render removes a file
//! only if it is still exactly what was written.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    path::Path,
};

use serde_json::{Map, Value, json};

use super::Renderer;
use crate::{
    Result,
    writer::{clean_key, validate_key},
};

/// Key -> the hashes of content this renderer may have left in it.
pub(super) type Manifest = BTreeMap<String, BTreeSet<u64>>;

/// The manifest in `path`; empty if there is none. One that cannot be
/// read is treated as empty (so nothing is removed on its word), with a
/// warning. Keys that would reach outside the directory are dropped.
pub(super) fn read_manifest(path: &Path) -> Manifest {
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

/// Records `manifest` in `path`, atomically as any rendered file.
pub(super) fn write_manifest(path: &Path, manifest: &Manifest) -> Result<()> {
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
