//! The VM ids kept in the state directory (`<state-dir>/vm-ids`), so that
//! a definition keeps its id across daemon restarts: one line per id,
//! `ID LABEL NAME` (the source label and the definition's directory name),
//! written whole to a temporary file, synced, and renamed over the old one.
//!
//! A line that cannot be read (or repeats an id or a key) is skipped with a
//! warning: its definition gets a new id, nothing else is lost.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use vm_catalog_protocol::{SourceLabel, VmId, VmName};

use crate::catalog::{IdKey, VmIds};

const HEADER: &str = "# vm-catalogd VM ids: ID SOURCE-LABEL DIRECTORY-NAME\n";

/// Reads the ids in `path` (none if it does not exist); new ids come from a
/// generator seeded with `seed`.
pub fn load(path: &Path, seed: u64) -> io::Result<VmIds> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(VmIds::new(seed)),
        Err(e) => return Err(e),
    };
    let mut bad = 0usize;
    let mut known: Vec<(IdKey, VmId)> = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse(line) {
            Some(entry) => known.push(entry),
            None => bad += 1,
        }
    }
    let n = known.len();
    let ids = VmIds::with(known, seed);
    bad += n - ids.len();
    if bad > 0 {
        tracing::warn!(
            file = %path.display(),
            lines = bad,
            "unreadable or repeated VM id lines skipped; those definitions get new ids"
        );
    }
    Ok(ids)
}

fn parse(line: &str) -> Option<(IdKey, VmId)> {
    let mut words = line.split(' ');
    let id = VmId::try_from(words.next()?).ok()?;
    let label = SourceLabel::try_from(words.next()?).ok()?;
    let name = VmName::try_from(words.next()?).ok()?;
    words.next().is_none().then_some(((label, name), id))
}

/// Writes every id of `ids` to `path`, atomically.
pub fn save(path: &Path, ids: &VmIds) -> io::Result<()> {
    let mut text = String::from(HEADER);
    for ((label, name), id) in ids.iter() {
        text.push_str(&format!("{id} {label} {name}\n"));
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("new");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_survive_a_save_and_a_load_and_bad_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/vm-ids");
        assert!(load(&path, 1).unwrap().is_empty(), "no file: no ids");
        let mut ids = VmIds::new(3);
        let a = ids.assign(&"sys".parse().unwrap(), &"netvm".parse().unwrap());
        let b = ids.assign(&"user".parse().unwrap(), &"nc".parse().unwrap());
        save(&path, &ids).unwrap();
        let back = load(&path, 9).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("{a} sys netvm\n")), "{text}");
        fs::write(
            &path,
            format!("{text}no-id line here\n{b} other x\nZZZZZZ sys x y\n"),
        )
        .unwrap();
        let back = load(&path, 9).unwrap();
        assert_eq!(back.len(), 2, "the repeated id and bad lines are skipped");
    }
}
