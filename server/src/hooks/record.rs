//! The record of prepared VMs, `<state-dir>/vm-hooks.json`: versioned
//! JSON, replaced atomically (write, fsync, rename), read leniently: a
//! missing file is an empty record, and an unreadable file or entry is
//! logged and skipped (its VM is then prepared again, which a hook must
//! bear: `prepare` of a prepared VM is what a lost record costs).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use vm_catalog_protocol::VmId;

use super::VmFacts;

/// The format version.
pub const VERSION: u32 = 1;

#[derive(Serialize)]
struct Record<'a> {
    version: u32,
    prepared: Vec<&'a VmFacts>,
}

/// Reads the record at `path`.
pub fn load(path: &Path) -> BTreeMap<VmId, VmFacts> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return BTreeMap::new(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the record of prepared vms; they are prepared again");
            return BTreeMap::new();
        }
    };
    parse(&bytes, path)
}

fn parse(bytes: &[u8], path: &Path) -> BTreeMap<VmId, VmFacts> {
    let value: serde_json::Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot parse the record of prepared vms; they are prepared again");
            return BTreeMap::new();
        }
    };
    let version = value.get("version").and_then(|v| v.as_u64());
    if version != Some(u64::from(VERSION)) {
        tracing::warn!(file = %path.display(), ?version, "unknown version of the record of prepared vms; they are prepared again");
        return BTreeMap::new();
    }
    let entries = value
        .get("prepared")
        .and_then(|p| p.as_array())
        .cloned()
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    for e in entries {
        match serde_json::from_value::<VmFacts>(e) {
            Ok(f) => {
                out.insert(f.id.clone(), f);
            }
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "an entry of the record of prepared vms is unreadable: skipped");
            }
        }
    }
    out
}

/// Writes the record to `path` atomically; a failure is logged (the
/// record is an aid to the next start).
pub fn save_or_warn(path: &Path, prepared: &BTreeMap<VmId, VmFacts>) {
    let record = Record {
        version: VERSION,
        prepared: prepared.values().collect(),
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Err(e) = crate::apply::state_file::save(&record, path) {
        tracing::warn!(error = %e, "cannot save the record of prepared vms; they may be prepared again at the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn facts(id: &str, name: &str) -> VmFacts {
        VmFacts {
            id: id.parse().unwrap(),
            name: name.parse().unwrap(),
            source: "user".parse().unwrap(),
            source_root: PathBuf::from("/src"),
            path: PathBuf::from(format!("/src/{name}")),
            dir: PathBuf::from(format!("/run/vm/by-id/{id}")),
            view: PathBuf::from(format!("/run/vm/by-id/{id}/config")),
        }
    }

    #[test]
    fn the_record_round_trips_and_is_replaced_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/vm-hooks.json");
        assert!(load(&path).is_empty(), "no file, no prepared vm");
        let mut m = BTreeMap::new();
        for (id, name) in [("abcdef", "a"), ("ABCDEF", "b")] {
            let f = facts(id, name);
            m.insert(f.id.clone(), f);
        }
        save_or_warn(&path, &m);
        assert_eq!(load(&path), m);
        m.remove(&"abcdef".parse().unwrap());
        save_or_warn(&path, &m);
        assert_eq!(load(&path), m);
        assert!(!path.with_extension("json.tmp").exists());
    }

    #[test]
    fn a_bad_record_or_entry_is_skipped() {
        let p = Path::new("x");
        assert!(parse(b"{not json", p).is_empty());
        assert!(parse(br#"{"version":99,"prepared":[]}"#, p).is_empty());
        let good = serde_json::to_value(facts("abcdef", "a")).unwrap();
        let text = serde_json::json!({
            "version": VERSION,
            "prepared": [good, {"id": "bad id!", "name": "b"}, 7],
        });
        let got = parse(text.to_string().as_bytes(), p);
        assert_eq!(got.len(), 1);
        assert!(got.contains_key(&"abcdef".parse().unwrap()));
    }
}
