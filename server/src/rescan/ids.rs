//! The VM ids kept in the state directory (`<state-dir>/vm-ids`), so that
//! a definition keeps its id across daemon restarts: one line per id,
//! `ID LABEL NAME` (the source label and the definition's directory name),
//! written whole to a temporary file, synced, and renamed over the old one.
//! Between two whole writes, what changed is appended and synced
//! ([`Journal`]): a new id as its line, a forgotten one as `- LABEL NAME`;
//! reading replays the lines in order. So a new VM costs one short append,
//! not the whole file; the file is written whole again when the appended
//! lines outnumber the ids (and at least [`COMPACT_AFTER`]), at the first
//! save after a start (so that a line a crash cut short is never appended
//! to), and after an append failed.
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

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{SourceLabel, VmId, VmName};

use crate::catalog::{BY_ID, BY_NAME, IdEvent, IdKey, Layout, Names, VmIds};
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

/// The ids `path` holds, its lines replayed in order (a `- LABEL NAME`
/// line forgets what the lines before it gave that key), and how many
/// lines could not be read.
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
    let mut known: Vec<Option<(IdKey, VmId)>> = Vec::new();
    let mut lines_of: HashMap<IdKey, Vec<usize>> = HashMap::new();
    for line in bytes.split(|b| *b == b'\n') {
        if line.is_empty() || line.starts_with(b"#") {
            continue;
        }
        match std::str::from_utf8(line).ok().and_then(parse) {
            Some(Line::Id(key, id)) => {
                lines_of.entry(key.clone()).or_default().push(known.len());
                known.push(Some((key, id)));
            }
            Some(Line::Forget(key)) => {
                for i in lines_of.remove(&key).unwrap_or_default() {
                    known[i] = None;
                }
            }
            None => bad += 1,
        }
    }
    (known.into_iter().flatten().collect(), bad)
}

/// One line of the file.
enum Line {
    /// `ID LABEL NAME`.
    Id(IdKey, VmId),
    /// `- LABEL NAME`.
    Forget(IdKey),
}

fn parse(line: &str) -> Option<Line> {
    let mut words = line.split(' ');
    let first = words.next()?;
    let label = SourceLabel::try_from(words.next()?).ok()?;
    let name = VmName::try_from(words.next()?).ok()?;
    if words.next().is_some() {
        return None;
    }
    if first == FORGET {
        return Some(Line::Forget((label, name)));
    }
    Some(Line::Id((label, name), VmId::try_from(first).ok()?))
}

/// The first word of a line that forgets a key's id.
const FORGET: &str = "-";

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

/// Appends `events` to the file at `path`, which must exist, and syncs it.
pub fn append(path: &Path, events: &[IdEvent]) -> io::Result<()> {
    let mut text = String::new();
    for e in events {
        match e {
            IdEvent::Made((label, name), id) => text.push_str(&format!("{id} {label} {name}\n")),
            IdEvent::Forgotten((label, name)) => {
                text.push_str(&format!("{FORGET} {label} {name}\n"))
            }
        }
    }
    let mut f = fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())?;
    f.sync_data()
}

/// The file is written whole again once more lines than this were
/// appended (and more than it holds ids).
pub const COMPACT_AFTER: usize = 256;

/// How the ids file is kept between saves: appended to, or written whole.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    /// Lines appended since the file was last written whole.
    appended: usize,
    /// The next save writes the file whole: nothing was written since
    /// the start, or an append failed.
    whole_next: bool,
}

impl Journal {
    /// The ids file at `path`, written whole at the first save.
    pub fn new(path: PathBuf) -> Journal {
        Journal {
            path,
            appended: 0,
            whole_next: true,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves what `ids` made and forgot since the last save: appended, or
    /// the file written whole (see the module's documentation).
    pub fn save(&mut self, ids: &mut VmIds) -> io::Result<()> {
        let log = ids.take_log();
        if log.is_empty() {
            return Ok(());
        }
        let appended = self.appended + log.len();
        if !self.whole_next && appended <= COMPACT_AFTER.max(ids.len()) {
            match append(&self.path, &log) {
                Ok(()) => {
                    self.appended = appended;
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot append to the VM ids; writing them whole")
                }
            }
        }
        self.whole_next = true;
        save(&self.path, ids)?;
        self.whole_next = false;
        self.appended = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn key(label: &str, name: &str) -> (SourceLabel, VmName) {
        (label.parse().unwrap(), name.parse().unwrap())
    }

    fn inode(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().ino()
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn a_new_id_is_appended_to_the_file_not_written_whole() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        let mut journal = Journal::new(path.clone());
        let mut ids = VmIds::new(3);
        let (l, n) = key("sys", "netvm");
        ids.assign(&l, &n);
        journal.save(&mut ids).unwrap();
        let written = inode(&path);
        let (l, n) = key("user", "nc");
        let id = ids.assign(&l, &n);
        journal.save(&mut ids).unwrap();
        assert_eq!(inode(&path), written, "appended in place, not renamed over");
        assert_eq!(lines(&path).last().unwrap(), &format!("{id} user nc"));
        let back = load(&path, 9, &no_disk()).0;
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_forgotten_then_remade_id_loads_as_the_new_one_not_the_first_owner() {
        // Without the `-` line a reload would keep the key's first id (the
        // first owner of a repeated key wins).
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        let mut journal = Journal::new(path.clone());
        let mut ids = VmIds::new(3);
        let (l, n) = key("user", "nc");
        let first = ids.assign(&l, &n);
        journal.save(&mut ids).unwrap();
        ids.retain(|_| false);
        journal.save(&mut ids).unwrap();
        assert!(load(&path, 9, &no_disk()).0.is_empty(), "forgotten");
        let second = ids.assign(&l, &n);
        assert_ne!(first, second);
        journal.save(&mut ids).unwrap();
        let (back, damage) = load(&path, 9, &no_disk());
        assert_eq!(back.get(&l, &n), Some(&second));
        assert_eq!(damage, None, "{}", lines(&path).join("\n"));
        assert_eq!(
            lines(&path).len(),
            4,
            "the header, then three appended lines"
        );
    }

    #[test]
    fn the_file_is_written_whole_once_the_appended_lines_outnumber_the_ids() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        let mut journal = Journal::new(path.clone());
        let mut ids = VmIds::new(3);
        let (l, keep) = key("sys", "kept");
        ids.assign(&l, &keep);
        journal.save(&mut ids).unwrap();
        let mut whole = inode(&path);
        let mut rewrites = 0;
        for i in 0..COMPACT_AFTER {
            let n: VmName = format!("vm{i}").parse().unwrap();
            ids.assign(&l, &n);
            ids.retain(|(_, name)| *name == keep);
            journal.save(&mut ids).unwrap();
            if inode(&path) != whole {
                rewrites += 1;
                whole = inode(&path);
                assert_eq!(lines(&path).len(), 2, "the header and the one id left");
            }
        }
        assert_eq!(
            rewrites, 1,
            "{COMPACT_AFTER} lines, then written whole once"
        );
        let back = load(&path, 9, &no_disk()).0;
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            ids.iter().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_line_a_crash_cut_short_is_never_appended_to() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("vm-ids");
        let mut ids = VmIds::new(3);
        let (l, n) = key("sys", "netvm");
        ids.assign(&l, &n);
        save(&path, &ids).unwrap();
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"AbCd").unwrap();
        drop(f);
        // The next start: the first save writes the file whole.
        let (mut ids, damage) = load(&path, 5, &no_disk());
        assert_eq!(damage.map(|d| d.unreadable), Some(1));
        let mut journal = Journal::new(path.clone());
        let (l, n2) = key("user", "nc");
        ids.assign(&l, &n2);
        journal.save(&mut ids).unwrap();
        let (back, damage) = load(&path, 9, &no_disk());
        assert_eq!(damage, None, "{}", lines(&path).join("\n"));
        assert_eq!(back.len(), 2);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever was made, forgotten and saved (appended or written
        /// whole, the file's history replayed), loading gives the ids kept.
        #[test]
        fn the_ids_loaded_are_the_ids_kept_whatever_was_appended(
            ops in proptest::collection::vec((0u8..3, 0u8..12), 1..600)
        ) {
            let d = tempfile::tempdir().unwrap();
            let path = d.path().join("vm-ids");
            let mut journal = Journal::new(path.clone());
            let mut ids = VmIds::new(7);
            let label: SourceLabel = "user".parse().unwrap();
            for (op, n) in ops {
                let name: VmName = format!("vm{n}").parse().unwrap();
                match op {
                    0 => {
                        ids.assign(&label, &name);
                    }
                    1 => ids.retain(|(_, k)| *k != name),
                    _ => journal.save(&mut ids).unwrap(),
                }
            }
            journal.save(&mut ids).unwrap();
            let (back, damage) = load(&path, 9, &no_disk());
            proptest::prop_assert_eq!(damage, None);
            proptest::prop_assert_eq!(
                back.iter().collect::<Vec<_>>(),
                ids.iter().collect::<Vec<_>>()
            );
        }
    }

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
