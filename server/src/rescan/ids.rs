//! The VM ids kept in the state directory (`<state-dir>/vm-ids`), so that
//! a definition keeps its id across daemon restarts: one line per id,
//! `ID LABEL NAME` (the source label and the definition's directory name),
//! written whole to a temporary file, synced, and renamed over the old one.
//!
//! Reading never fails and never stops the daemon. Each line stands alone:
//! one that cannot be read (not UTF-8, not three valid words) is skipped
//! and logged. The ids in use are also on disk, in the Spectrum layout: a
//! by-name link `<vm-dir>/by-name/<name>` → `<vm-dir>/by-id/<id>` whose view
//! the daemon made (it holds [`MARKER`]). What those links say comes first,
//! so that a lost, truncated or edited file gives no running VM a new id
//! (and so no new view or service); then the file's lines; a repeated key
//! or id keeps its first owner. A catalog name maps to its key exactly with
//! qualified names (`<label>.<name>`); with plain names the key is guessed
//! (the first directory source holding a directory of that name) and only
//! fills in keys the file does not have.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{SourceLabel, VmId, VmName};

use crate::catalog::{BY_ID, BY_NAME, IdKey, Layout, Names, VmIds};
use crate::views::MARKER;

/// Ids by key, as read.
type Entries = Vec<(IdKey, VmId)>;

const HEADER: &str = "# vm-catalogd VM ids: ID SOURCE-LABEL DIRECTORY-NAME\n";

/// Where the ids in use can be read again when the file cannot.
#[derive(Debug, Clone, Default)]
pub struct OnDisk {
    /// The VM directory.
    pub vm_dir: PathBuf,
    /// Only [`Layout::Spectrum`] keeps ids on disk.
    pub layout: Layout,
    /// How catalog names are made.
    pub names: Names,
    /// The directory sources, in precedence order: label and root.
    pub sources: Vec<(SourceLabel, PathBuf)>,
}

impl OnDisk {
    /// What the pipeline's `config` says.
    pub fn of(config: &super::PipelineConfig) -> OnDisk {
        OnDisk {
            vm_dir: config.merge.vm_dir.clone(),
            layout: config.merge.layout,
            names: config.merge.names,
            sources: config
                .sources
                .iter()
                .map(|s| (s.label.clone(), s.root.clone()))
                .collect(),
        }
    }
}

/// What was wrong with the ids file when it was read: said in the log, and
/// in the status (the message of the next apply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IdsDamage {
    /// Lines that could not be read.
    pub unreadable: usize,
    /// Lines that repeat an id or a definition, or that the by-name links
    /// contradict: the first owner, or the link, wins.
    pub overridden: usize,
    /// Ids missing from the file, read again from the by-name links.
    pub recovered: usize,
}

impl std::fmt::Display for IdsDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vm-ids: {} unreadable and {} overridden lines skipped, {} ids read again from the \
             by-name links",
            self.unreadable, self.overridden, self.recovered
        )
    }
}

/// Reads the ids in `path` and on `disk`; new ids come from a generator
/// seeded with `seed`. Whatever cannot be read is logged and skipped, and
/// returned as the damage found (`None`: none).
pub fn load(path: &Path, seed: u64, disk: &OnDisk) -> (VmIds, Option<IdsDamage>) {
    let (exact, guessed) = recover(disk);
    let (lines, bad) = read_lines(path);
    let known = exact
        .into_iter()
        .chain(lines.iter().cloned())
        .chain(guessed);
    let ids = VmIds::with(known, seed);
    let kept: BTreeSet<(&IdKey, &VmId)> = lines.iter().map(|(k, id)| (k, id)).collect();
    let dropped = lines
        .iter()
        .filter(|(k, id)| ids.get(&k.0, &k.1) != Some(id))
        .count();
    if bad > 0 || dropped > 0 {
        tracing::warn!(
            file = %path.display(),
            unreadable = bad,
            overridden = dropped,
            "VM id lines skipped (unreadable, repeated, or contradicted by the by-name links)"
        );
    }
    let from_disk = ids.iter().filter(|e| !kept.contains(e)).count();
    if from_disk > 0 {
        tracing::warn!(
            file = %path.display(),
            ids = from_disk,
            "VM ids missing from the file were read again from the by-name links"
        );
    }
    let damage = IdsDamage {
        unreadable: bad,
        overridden: dropped,
        recovered: from_disk,
    };
    let damaged = damage != IdsDamage::default();
    (ids, damaged.then_some(damage))
}

/// The readable lines of `path`, and how many were not.
fn read_lines(path: &Path) -> (Entries, usize) {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (Vec::new(), 0),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "cannot read the VM ids");
            return (Vec::new(), 0);
        }
    };
    let mut bad = 0;
    let mut known = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match std::str::from_utf8(line).ok().and_then(parse) {
            Some(entry) => known.push(entry),
            None => bad += 1,
        }
    }
    (known, bad)
}

fn parse(line: &str) -> Option<(IdKey, VmId)> {
    let mut words = line.split(' ');
    let id = VmId::try_from(words.next()?).ok()?;
    let label = SourceLabel::try_from(words.next()?).ok()?;
    let name = VmName::try_from(words.next()?).ok()?;
    words.next().is_none().then_some(((label, name), id))
}

/// The ids the by-name links of `disk` give: those whose key is certain
/// (qualified names), and those whose key is a guess (plain names).
fn recover(disk: &OnDisk) -> (Entries, Entries) {
    let mut exact = Vec::new();
    let mut guessed = Vec::new();
    if disk.layout != Layout::Spectrum {
        return (exact, guessed);
    }
    let Ok(entries) = fs::read_dir(disk.vm_dir.join(BY_NAME)) else {
        return (exact, guessed);
    };
    let labels: BTreeSet<&SourceLabel> = disk.sources.iter().map(|(l, _)| l).collect();
    for entry in entries.flatten() {
        let Some(name) = entry
            .file_name()
            .to_str()
            .and_then(|n| VmName::try_from(n).ok())
        else {
            continue;
        };
        let Some(id) = linked_id(&disk.vm_dir, &entry.path()) else {
            continue;
        };
        match disk.names {
            Names::Qualified => {
                if let Some(key) = qualified_key(&name, &labels) {
                    exact.push((key, id));
                }
            }
            Names::Plain => {
                if let Some((label, _)) = disk
                    .sources
                    .iter()
                    .find(|(_, root)| root.join(name.as_str()).is_dir())
                {
                    guessed.push(((label.clone(), name), id));
                }
            }
        }
    }
    (exact, guessed)
}

/// The id a by-name link leads to, when it is a symlink into `by-id/` to a
/// view the daemon made.
fn linked_id(vm_dir: &Path, link: &Path) -> Option<VmId> {
    if !fs::symlink_metadata(link).ok()?.file_type().is_symlink() {
        return None;
    }
    let target = fs::read_link(link).ok()?;
    let parent = target.parent()?;
    if parent.file_name()? != BY_ID {
        return None;
    }
    let id = VmId::try_from(target.file_name()?.to_str()?).ok()?;
    let marker = vm_dir
        .join(BY_ID)
        .join(id.as_str())
        .join("config")
        .join(MARKER);
    fs::symlink_metadata(marker).ok()?;
    Some(id)
}

/// The key of a qualified catalog name: `<label>.<name>`, split at the
/// first `.` after which the label is a configured source's, else at the
/// first `.` that gives a valid label and name (a partition's label).
fn qualified_key(name: &VmName, labels: &BTreeSet<&SourceLabel>) -> Option<IdKey> {
    let name = name.as_str();
    crate::catalog::qualified(name, |l| labels.contains(l))
        .or_else(|| crate::catalog::qualified(name, |_| true))
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
    use std::os::unix::fs::symlink;

    use super::*;

    fn no_disk() -> OnDisk {
        OnDisk::default()
    }

    #[test]
    fn ids_survive_a_save_and_a_load_and_bad_lines_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state/vm-ids");
        assert!(load(&path, 1, &no_disk()).0.is_empty(), "no file: no ids");
        let mut ids = VmIds::new(3);
        let a = ids.assign(&"sys".parse().unwrap(), &"netvm".parse().unwrap());
        let b = ids.assign(&"user".parse().unwrap(), &"nc".parse().unwrap());
        save(&path, &ids).unwrap();
        let back = load(&path, 9, &no_disk()).0;
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
        let back = load(&path, 9, &no_disk()).0;
        assert_eq!(back.len(), 2, "the repeated id and bad lines are skipped");
    }

    #[test]
    fn a_non_utf8_byte_in_vm_ids_skips_only_its_line() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        let mut bytes = b"AAAAAA sys netvm\nBBBBBB user n".to_vec();
        bytes.push(0xff);
        bytes.extend_from_slice(b"c\nCCCCCC user app\n");
        fs::write(&path, bytes).unwrap();
        let (ids, damage) = load(&path, 1, &no_disk());
        assert_eq!(ids.len(), 2);
        assert_eq!(
            ids.get(&"user".parse().unwrap(), &"app".parse().unwrap())
                .map(VmId::as_str),
            Some("CCCCCC")
        );
        let damage = damage.expect("the damage is told");
        assert_eq!((damage.unreadable, damage.recovered), (1, 0));
        assert_eq!(load(&path, 1, &no_disk()).1, Some(damage), "each time");
        fs::write(&path, "AAAAAA sys netvm\n").unwrap();
        assert_eq!(load(&path, 1, &no_disk()).1, None, "a sound file");
    }

    #[test]
    fn an_unreadable_vm_ids_is_not_fatal() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        fs::create_dir(&path).unwrap();
        assert!(load(&path, 1, &no_disk()).0.is_empty());
    }

    /// A Spectrum VM directory with marked views `by-id/<id>/config` and
    /// by-name links to them.
    fn spectrum(vm_dir: &Path, views: &[(&str, &str)]) {
        for (name, id) in views {
            let slot = vm_dir.join(BY_ID).join(id);
            fs::create_dir_all(slot.join("config")).unwrap();
            fs::write(slot.join("config").join(MARKER), "").unwrap();
            fs::create_dir_all(vm_dir.join(BY_NAME)).unwrap();
            symlink(&slot, vm_dir.join(BY_NAME).join(name)).unwrap();
        }
    }

    #[test]
    fn lost_or_edited_vm_ids_are_read_again_from_the_by_name_links() {
        let d = tempfile::tempdir().unwrap();
        let vm_dir = d.path().join("vm");
        spectrum(&vm_dir, &[("sys.netvm", "NNNNNN"), ("user.app", "AAAAAA")]);
        // Not made by the daemon: no marker.
        fs::create_dir_all(vm_dir.join(BY_ID).join("XXXXXX/config")).unwrap();
        symlink(
            vm_dir.join(BY_ID).join("XXXXXX"),
            vm_dir.join(BY_NAME).join("user.x"),
        )
        .unwrap();
        let disk = OnDisk {
            vm_dir,
            layout: Layout::Spectrum,
            names: Names::Qualified,
            sources: vec![("sys".parse().unwrap(), d.path().join("sys"))],
        };
        let path = d.path().join("vm-ids");
        let key = |l: &str, n: &str| -> IdKey { (l.parse().unwrap(), n.parse().unwrap()) };
        let id_of = |ids: &VmIds, l: &str, n: &str| {
            let (l, n) = key(l, n);
            ids.get(&l, &n).map(|i| i.as_str().to_owned())
        };
        let lost = load(&path, 1, &disk).0;
        assert_eq!(id_of(&lost, "sys", "netvm").as_deref(), Some("NNNNNN"));
        assert_eq!(id_of(&lost, "user", "app").as_deref(), Some("AAAAAA"));
        assert_eq!(lost.len(), 2, "an unmarked view gives nothing");
        // The file gives netvm's id to app too, and app's to netvm: the
        // links win, and a line of the file that no link contradicts stays.
        fs::write(
            &path,
            "AAAAAA sys netvm\nAAAAAA user app\nNNNNNN user other\nOOOOOO user more\n",
        )
        .unwrap();
        let edited = load(&path, 1, &disk).0;
        assert_eq!(id_of(&edited, "sys", "netvm").as_deref(), Some("NNNNNN"));
        assert_eq!(id_of(&edited, "user", "app").as_deref(), Some("AAAAAA"));
        assert_eq!(id_of(&edited, "user", "other"), None, "its id is taken");
        assert_eq!(id_of(&edited, "user", "more").as_deref(), Some("OOOOOO"));
    }

    #[test]
    fn with_plain_names_a_recovered_id_goes_to_the_first_source_holding_the_name() {
        let d = tempfile::tempdir().unwrap();
        let vm_dir = d.path().join("vm");
        spectrum(&vm_dir, &[("app", "AAAAAA")]);
        fs::create_dir_all(d.path().join("b/app")).unwrap();
        let disk = OnDisk {
            vm_dir,
            layout: Layout::Spectrum,
            names: Names::Plain,
            sources: vec![
                ("a".parse().unwrap(), d.path().join("a")),
                ("b".parse().unwrap(), d.path().join("b")),
            ],
        };
        let ids = load(&d.path().join("vm-ids"), 1, &disk).0;
        assert_eq!(
            ids.get(&"b".parse().unwrap(), &"app".parse().unwrap())
                .map(VmId::as_str),
            Some("AAAAAA")
        );
    }
}
