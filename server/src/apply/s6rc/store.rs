//! The state directory: compiled databases, their rendered sources, the
//! service definitions those sources link to, the state file, the
//! conversion file.
//!
//! ```text
//! <state-dir>/
//!   state.json       what is live (see `state.rs`)
//!   svc/<content>/   one rendered service directory, named by its content
//!                    fingerprint: written once, shared by every source that has it
//!   db-<gen>-<n>/    compiled databases
//!   src-<gen>-<n>/   the rendered source of each database, kept with it:
//!                    NAME -> <state-dir>/svc/<content>, one symlink per service
//!   tmp-*            work in progress (tmp-src-*, tmp-svc-*)
//!   trash/           what the last tidy took out, deleted in the background
//!   conversions      the conversion file of the last update that restarted VMs
//! ```
//!
//! Everything appears under its final name by one `rename`, complete: a
//! crash leaves at most a `tmp-*` entry, never a `svc/` entry or a source
//! that compiles to something else. An entry of `svc/` is never changed
//! once it exists (its name is the fingerprint of its contents), so a
//! source of symlinks to it stays what it was when it was written.
//!
//! Every path handed to s6-rc is absolute and free of symlinks: the state
//! directory is canonicalized when it is opened (s6rc.md §2.13).
//! (`s6-rc-compile` follows the symlinks *inside* a source directory: it
//! `stat`s and opens each entry.)

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crate::apply::fingerprint::Fingerprint;

/// The state directory.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    /// The thread that empties `trash/`, started by the first discard.
    trash: OnceLock<Emptier>,
}

/// The paths of one new database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Where s6-rc-compile writes it (does not exist yet).
    pub db: PathBuf,
    /// Its rendered source (does not exist yet).
    pub source: PathBuf,
    /// Where the source is written before it is renamed to `source`.
    pub tmp: PathBuf,
}

impl Store {
    /// Creates (mode 0700) and canonicalizes `root`, and its `svc/`.
    pub fn open(root: &Path) -> io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        let root = fs::canonicalize(root)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("svc"))?;
        Ok(Store {
            root,
            trash: OnceLock::new(),
        })
    }

    /// The state directory (canonical).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<state-dir>/state.json`.
    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    /// `<state-dir>/conversions`.
    pub fn conversions(&self) -> PathBuf {
        self.root.join("conversions")
    }

    /// `<state-dir>/svc/<content>`: the service directory whose content
    /// fingerprint is `content`.
    pub fn service_dir(&self, content: &Fingerprint) -> PathBuf {
        self.root.join("svc").join(content.to_hex())
    }

    /// Where [`Store::service_dir`] is written before it is renamed into
    /// place.
    pub fn tmp_service_dir(&self, content: &Fingerprint) -> PathBuf {
        self.root.join(format!("tmp-svc-{}", content.to_hex()))
    }

    /// Fresh paths for a database of catalog generation `generation`.
    pub fn allocate(&self, generation: u64) -> Slot {
        let mut n = 0u64;
        loop {
            let id = format!("{generation}-{n}");
            let slot = Slot {
                db: self.root.join(format!("db-{id}")),
                source: self.root.join(format!("src-{id}")),
                tmp: self.root.join(format!("tmp-src-{id}")),
            };
            let taken = [&slot.db, &slot.source, &slot.tmp]
                .iter()
                .any(|p| fs::symlink_metadata(p).is_ok());
            if !taken {
                return slot;
            }
            n += 1;
        }
    }

    /// The source directory that belongs with database `db` of this store.
    pub fn source_of(&self, db: &Path) -> Option<PathBuf> {
        let name = db.file_name()?.to_str()?;
        let id = name.strip_prefix("db-")?;
        (db.parent() == Some(self.root.as_path())).then(|| self.root.join(format!("src-{id}")))
    }

    /// Every database, source and temporary entry except those in `keep`,
    /// and every service directory that no source in `keep` links to.
    pub fn garbage(&self, keep: &[&Path]) -> Vec<PathBuf> {
        let mut out = self.old_databases(keep);
        out.extend(self.old_sources(keep));
        out.sort();
        out
    }

    /// Every compiled database except those in `keep`.
    pub fn old_databases(&self, keep: &[&Path]) -> Vec<PathBuf> {
        self.entries(&["db-"], keep)
    }

    /// Every source and temporary entry except those in `keep`, and every
    /// service directory that no source in `keep` links to. No s6-rc
    /// program uses any of them (a compiled database holds copies of what
    /// it needs): only the applier's own compiles read them.
    pub fn old_sources(&self, keep: &[&Path]) -> Vec<PathBuf> {
        let mut out = self.entries(&["src-", "tmp-"], keep);
        let svc = self.root.join("svc");
        let linked: BTreeSet<PathBuf> = keep.iter().flat_map(|k| linked_from(k, &svc)).collect();
        if let Ok(dir) = fs::read_dir(&svc) {
            out.extend(
                dir.flatten()
                    .map(|e| e.path())
                    .filter(|p| !linked.contains(p)),
            );
        }
        out.sort();
        out
    }

    /// The entries of the state directory whose names start with one of
    /// `prefixes`, except those in `keep`.
    fn entries(&self, prefixes: &[&str], keep: &[&Path]) -> Vec<PathBuf> {
        let Ok(dir) = fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<PathBuf> = dir
            .flatten()
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                prefixes.iter().any(|p| name.starts_with(p))
            })
            .map(|e| e.path())
            .filter(|p| !keep.iter().any(|k| k == p))
            .collect();
        out.sort();
        out
    }

    /// Moves `paths` out of the way into `trash/`, at once, and has them
    /// deleted in the background. Returns what it could not move (nor
    /// remove).
    pub fn discard(&self, paths: Vec<PathBuf>) -> Vec<(PathBuf, io::Error)> {
        if paths.is_empty() {
            return Vec::new();
        }
        let trash = self.root.join("trash");
        let mut failed = Vec::new();
        if let Err(e) = fs::create_dir(&trash)
            && e.kind() != io::ErrorKind::AlreadyExists
        {
            // No trash: remove them here and now.
            for p in paths {
                if let Err(e) = remove_any(&p) {
                    failed.push((p, e));
                }
            }
            return failed;
        }
        let mut n = 0u64;
        for p in paths {
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let moved = loop {
                let to = trash.join(format!("{n}-{name}"));
                n += 1;
                if fs::symlink_metadata(&to).is_ok() {
                    continue;
                }
                break fs::rename(&p, &to);
            };
            match moved {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(_) => {
                    if let Err(e) = remove_any(&p) {
                        failed.push((p, e));
                    }
                }
            }
        }
        self.emptier().wake();
        failed
    }

    /// [`Store::garbage`], [`Store::discard`]ed.
    pub fn collect_garbage(&self, keep: &[&Path]) -> Vec<(PathBuf, io::Error)> {
        self.discard(self.garbage(keep))
    }

    /// Waits until `trash/` is empty (as far as it can be emptied).
    pub fn settle(&self) {
        if let Some(e) = self.trash.get() {
            e.settle();
        }
    }

    fn emptier(&self) -> &Emptier {
        self.trash
            .get_or_init(|| Emptier::start(self.root.join("trash")))
    }
}

/// The entries of `svc` that the symlinks in `source` point to.
fn linked_from(source: &Path, svc: &Path) -> Vec<PathBuf> {
    let Ok(dir) = fs::read_dir(source) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| fs::read_link(e.path()).ok())
        .filter(|t| t.parent() == Some(svc))
        .collect()
}

/// A request to the trash thread.
enum Request {
    /// Empty the trash.
    Empty,
    /// Empty the trash, then say so.
    Settle(mpsc::SyncSender<()>),
}

/// The thread that deletes what is in `trash/`: nothing there is used by
/// anything (it was moved there under the live lock, after checking that it
/// is neither live nor to be switched to), so no lock is needed.
#[derive(Debug)]
struct Emptier {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    dir: PathBuf,
}

impl Emptier {
    fn start(dir: PathBuf) -> Emptier {
        let (tx, rx) = mpsc::channel::<Request>();
        let d = dir.clone();
        let thread = std::thread::Builder::new()
            .name("s6rc-trash".into())
            .spawn(move || {
                while let Ok(r) = rx.recv() {
                    empty(&d);
                    if let Request::Settle(done) = r {
                        let _ = done.send(());
                    }
                }
            });
        match thread {
            Ok(t) => Emptier {
                tx: Some(tx),
                thread: Some(t),
                dir,
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the trash thread: deleting in place");
                Emptier {
                    tx: None,
                    thread: None,
                    dir,
                }
            }
        }
    }

    fn wake(&self) {
        match &self.tx {
            Some(tx) if tx.send(Request::Empty).is_ok() => {}
            _ => empty(&self.dir),
        }
    }

    fn settle(&self) {
        let (done, wait) = mpsc::sync_channel(1);
        match &self.tx {
            Some(tx) if tx.send(Request::Settle(done)).is_ok() => {
                let _ = wait.recv();
            }
            _ => empty(&self.dir),
        }
    }
}

impl Drop for Emptier {
    /// Finishes the deletion under way.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Deletes everything in `dir`; logs what it cannot delete.
fn empty(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if let Err(err) = remove_any(&path) {
            tracing::warn!(path = %path.display(), error = %err, "cannot delete an old database");
        }
    }
}

/// Removes a file, symlink or directory tree.
pub fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fingerprint::Hasher;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn allocate_skips_taken_ids_and_gc_keeps_only_what_it_is_told() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s6-rc")).unwrap();
        let a = store.allocate(3);
        assert_eq!(a.db, store.root().join("db-3-0"));
        fs::create_dir(&a.db).unwrap();
        fs::create_dir(&a.source).unwrap();
        let b = store.allocate(3);
        assert_eq!(b.db, store.root().join("db-3-1"));
        assert_eq!(store.source_of(&b.db), Some(b.source.clone()));
        assert_eq!(store.source_of(Path::new("/elsewhere/db-3-1")), None);
        fs::create_dir(&b.db).unwrap();
        fs::create_dir(&b.tmp).unwrap();
        fs::write(store.state_file(), "{}").unwrap();
        assert!(store.collect_garbage(&[&b.db]).is_empty());
        store.settle();
        assert_eq!(
            names(store.root()),
            ["db-3-1", "state.json", "svc", "trash"]
        );
        assert!(names(&store.root().join("trash")).is_empty());
    }

    #[test]
    fn service_dirs_stay_while_a_kept_source_links_to_them() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s6-rc")).unwrap();
        let (x, y) = (Hasher::new("x").finish(), Hasher::new("y").finish());
        for fp in [x, y] {
            fs::create_dir(store.service_dir(&fp)).unwrap();
        }
        let kept = store.allocate(1);
        fs::create_dir(&kept.source).unwrap();
        std::os::unix::fs::symlink(store.service_dir(&x), kept.source.join("a")).unwrap();
        fs::create_dir(store.tmp_service_dir(&y)).unwrap();
        assert_eq!(
            store.garbage(&[&kept.source]),
            [store.service_dir(&y), store.tmp_service_dir(&y)]
        );
        assert!(store.collect_garbage(&[&kept.source]).is_empty());
        store.settle();
        assert_eq!(names(&store.root().join("svc")), [x.to_hex()]);
        assert_eq!(names(store.root()), ["src-1-0", "svc", "trash"]);
    }

    #[test]
    fn discarding_the_same_name_twice_keeps_both_until_deleted() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::open(&d.path().join("s6-rc")).unwrap();
        // A full trash the thread has not emptied yet, from an earlier run.
        fs::create_dir_all(store.root().join("trash/0-db-1-0/x")).unwrap();
        for _ in 0..2 {
            let db = store.root().join("db-1-0");
            fs::create_dir_all(db.join("servicedirs/a")).unwrap();
            assert!(store.discard(vec![db.clone()]).is_empty());
            assert!(!db.exists(), "moved out at once");
        }
        store.settle();
        assert!(names(&store.root().join("trash")).is_empty());
    }
}
