//! The state directory: compiled databases, their rendered sources, the
//! state file, the conversion file.
//!
//! ```text
//! <state-dir>/
//!   state.json       what is live (see `state.rs`)
//!   db-<gen>-<n>/    compiled databases; after every apply only the live one is left
//!   src-<gen>-<n>/   the rendered source of each database, kept with it
//!   tmp-*            work in progress: removed at start-up and after every apply
//!   conversions      the conversion file of the last update that restarted VMs
//! ```
//!
//! Every path handed to s6-rc is absolute and free of symlinks: the state
//! directory is canonicalized when it is opened (s6rc.md §2.13).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The state directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
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
    /// Creates (mode 0700) and canonicalizes `root`.
    pub fn open(root: &Path) -> io::Result<Store> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)?;
        Ok(Store {
            root: fs::canonicalize(root)?,
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

    /// Removes every database, source and temporary directory except
    /// those in `keep`. Returns what it could not remove.
    pub fn collect_garbage(&self, keep: &[&Path]) -> Vec<(PathBuf, io::Error)> {
        let mut failed = Vec::new();
        let Ok(dir) = fs::read_dir(&self.root) else {
            return failed;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let ours = ["db-", "src-", "tmp-"].iter().any(|p| name.starts_with(p));
            let path = e.path();
            if !ours || keep.iter().any(|k| *k == path) {
                continue;
            }
            if let Err(err) = remove_any(&path) {
                failed.push((path, err));
            }
        }
        failed
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
        let mut left: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["db-3-1", "state.json"]);
    }
}
