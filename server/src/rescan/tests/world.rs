//! The tree the differential test changes, and the watch events its
//! changes make: each change of a directory entry is an event on the
//! watch of that directory's inode (if the last rescan asked to watch
//! it), marked with the real [`Dirty::mark`] and the real scope of the
//! target ([`WatchSet`]), as the inotify trigger marks it.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{SourceLabel, Trust};

use crate::definition::watch_targets::{Dirty, Scope, WatchSet};
use crate::source::SourceSpec;

/// The sources: label and trust, in precedence order.
pub(super) const SOURCES: [(&str, Trust); 3] = [
    ("sys", Trust::Trusted),
    ("user", Trust::Untrusted),
    ("extra", Trust::Untrusted),
];

/// The entry names the operations use: plain ones, one that reads as a
/// qualified reference, a hidden one.
pub(super) const NAMES: [&str; 5] = ["a", "b", "net", "user.a", ".h"];

/// A directory's identity, as inotify watches it.
type Inode = (u64, u64);

/// The tree, and what its changes marked since the last rescan.
pub(super) struct World {
    pub dir: tempfile::TempDir,
    /// What an event on each watched directory says changed.
    watches: HashMap<Inode, Scope>,
    pub dirty: Dirty,
    /// Makes every kernel written a new size.
    writes: usize,
}

fn inode(p: &Path) -> Option<Inode> {
    std::fs::symlink_metadata(p)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

impl World {
    /// Every source root made, empty; a trusted image directory with a
    /// kernel and a disk.
    pub(super) fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        for (label, _) in SOURCES {
            std::fs::create_dir_all(dir.path().join("src").join(label)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("away")).unwrap();
        std::fs::create_dir_all(dir.path().join("img")).unwrap();
        std::fs::write(dir.path().join("img/vmlinux"), b"kernel").unwrap();
        World {
            dir,
            watches: HashMap::new(),
            dirty: Dirty::Nothing,
            writes: 0,
        }
    }

    /// The trusted prefix of links in untrusted sources.
    pub(super) fn img(&self) -> PathBuf {
        self.dir.path().join("img/")
    }

    pub(super) fn root(&self, s: usize) -> PathBuf {
        self.dir.path().join("src").join(SOURCES[s].0)
    }

    pub(super) fn away(&self, s: usize) -> PathBuf {
        self.dir.path().join("away").join(SOURCES[s].0)
    }

    /// The source specs, in precedence order.
    pub(super) fn specs(&self) -> Vec<SourceSpec> {
        (0..SOURCES.len())
            .map(|s| {
                let label = SourceLabel::try_from(SOURCES[s].0).unwrap();
                SourceSpec::directory(label, self.root(s), SOURCES[s].1)
            })
            .collect()
    }

    /// Watches what `set` asks for, as the inotify trigger does: each
    /// target that can be opened, by inode; two targets on one inode share
    /// a watch, whose events mark everything unless their scopes agree.
    pub(super) fn watch(&mut self, set: &WatchSet) {
        self.watches.clear();
        for t in &set.targets {
            let Ok(fd) = t.open() else { continue };
            let st = rustix::fs::fstat(&fd).unwrap();
            self.watches
                .entry((st.st_dev, st.st_ino))
                .and_modify(|s| {
                    if *s != t.scope {
                        *s = Scope::Whole;
                    }
                })
                .or_insert_with(|| t.scope.clone());
        }
    }

    fn event(&mut self, watched: Option<Inode>, name: Option<&OsStr>) {
        if let Some(scope) = watched.and_then(|i| self.watches.get(&i)) {
            self.dirty.mark(scope, name);
        }
    }

    /// An event on `p`'s directory naming it.
    fn event_on_parent(&mut self, p: &Path) {
        let parent = inode(p.parent().unwrap());
        self.event(parent, p.file_name());
    }

    pub(super) fn mkdir(&mut self, p: &Path) {
        if std::fs::create_dir(p).is_ok() {
            self.event_on_parent(p);
        }
    }

    /// Writes `p` anew (never through a link), if its directory exists.
    pub(super) fn write(&mut self, p: &Path, bytes: &[u8]) {
        if !p.parent().unwrap().is_dir() {
            return;
        }
        self.remove(p);
        std::fs::write(p, bytes).unwrap();
        self.event_on_parent(p);
    }

    /// A kernel of a size never written before.
    pub(super) fn write_kernel(&mut self, p: &Path) {
        self.writes += 1;
        self.write(p, &vec![b'k'; self.writes]);
    }

    pub(super) fn symlink(&mut self, target: &Path, p: &Path) {
        if !p.parent().unwrap().is_dir() {
            return;
        }
        self.remove(p);
        std::os::unix::fs::symlink(target, p).unwrap();
        self.event_on_parent(p);
    }

    /// Removes `p`, a directory's entries first.
    pub(super) fn remove(&mut self, p: &Path) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            return;
        };
        if meta.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            children.sort();
            for c in children {
                self.remove(&c);
            }
            let me = inode(p);
            std::fs::remove_dir(p).unwrap();
            self.event_on_parent(p);
            self.event(me, None);
        } else {
            std::fs::remove_file(p).unwrap();
            self.event_on_parent(p);
        }
    }

    /// Renames `from` to `to`, unless `to` exists or `from` does not.
    pub(super) fn rename(&mut self, from: &Path, to: &Path) {
        if std::fs::symlink_metadata(to).is_ok() || !to.parent().unwrap().is_dir() {
            return;
        }
        let Some(me) = inode(from) else { return };
        std::fs::rename(from, to).unwrap();
        self.event_on_parent(from);
        self.event_on_parent(to);
        self.event(Some(me), None);
    }
}
