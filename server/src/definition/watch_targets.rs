//! What to watch after a rescan, computed from its scans: each source root,
//! each definition directory and its `blk/`, `providers/` and
//! `providers/net/` ([`targets_of`]). The inotify trigger
//! (`triggers::inotify`) watches exactly these.
//!
//! A source root that does not exist is waited for on its nearest existing
//! ancestor, so that creating it (or any directory on the way) is noticed; a
//! source that failed (too many entries, not a directory, unreadable) stays
//! watched, on its root and on that ancestor, so that fixing it is noticed
//! too. A directory below a source root is opened fd-relative with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` ([`Target::open`]), so a symlink
//! planted in a source never makes the daemon watch something else.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use vm_catalog_protocol::{SourceState, Trust};

use super::SourceScan;
use crate::source::Presence;

/// A directory to watch: `rel` below `root` (empty: the root itself).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Target {
    /// A source root (configured by the administrator, or a mount point).
    pub root: PathBuf,
    /// A path below it, resolved without following any symlink.
    pub rel: PathBuf,
    /// For an ancestor of a missing source root: its child on the way to
    /// that root, whose appearance is what the watch waits for.
    pub awaits: Option<PathBuf>,
}

impl Target {
    /// The root itself.
    pub fn root(root: impl Into<PathBuf>) -> Target {
        Target {
            root: root.into(),
            rel: PathBuf::new(),
            awaits: None,
        }
    }

    /// A directory below a root.
    pub fn below(root: impl Into<PathBuf>, rel: impl Into<PathBuf>) -> Target {
        Target {
            root: root.into(),
            rel: rel.into(),
            awaits: None,
        }
    }

    /// The nearest existing ancestor of `missing`, waiting for its child on
    /// the way to `missing` to appear; `None` if nothing exists up to `/`.
    pub fn ancestor_of(missing: &Path) -> Option<Target> {
        let mut child = missing;
        for dir in missing.ancestors().skip(1) {
            if dir.is_dir() {
                return Some(Target {
                    root: dir.to_path_buf(),
                    rel: PathBuf::new(),
                    awaits: Some(child.to_path_buf()),
                });
            }
            child = dir;
        }
        None
    }

    /// Whether what the watch waits for is already there (it appeared
    /// before the watch was added, so no event will say so).
    pub fn arrived(&self) -> bool {
        self.awaits
            .as_deref()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Opens the directory: the root as configured, anything below it
    /// without following symlinks or leaving it.
    pub fn open(&self) -> std::io::Result<OwnedFd> {
        let dir = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let root = rustix::fs::open(&self.root, dir, Mode::empty())?;
        if self.rel.as_os_str().is_empty() {
            return Ok(root);
        }
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        Ok(rustix::fs::openat2(
            &root,
            &self.rel,
            dir | OFlags::NOFOLLOW,
            Mode::empty(),
            resolve,
        )?)
    }
}

/// The directories to watch after a rescan that scanned `scans`: each
/// source root, each definition directory, its `blk/`, `providers/` and
/// `providers/net/`. A missing root is waited for on its nearest existing
/// ancestor; a source that failed although it is there (its scan failed:
/// too many entries, not a directory, unreadable) keeps its root and that
/// ancestor watched. A source that is gone or could not be made ready (a
/// partition) is not watched: hotplug and the partition manager see it.
pub fn targets_of(scans: &[SourceScan]) -> Vec<Target> {
    let mut out = Vec::new();
    for s in scans {
        let root = &s.spec.root;
        match s.state {
            SourceState::Ready => {}
            SourceState::Missing => {
                out.extend(Target::ancestor_of(root));
                continue;
            }
            SourceState::Failed if s.spec.presence == Presence::Present => {
                out.push(Target::root(root));
                if let Some(parent) = root.parent() {
                    out.push(Target::root(parent));
                }
                continue;
            }
            SourceState::Unavailable | SourceState::Failed => continue,
        }
        out.push(Target::root(root));
        for d in &s.definitions {
            // A definition is the root's child named after it; in a trusted
            // source it may be a link to a directory elsewhere (a store
            // path), watched where it leads.
            let (base, dir) = match s.spec.trust {
                Trust::Trusted if !d.dir.starts_with(root) => (d.dir.clone(), PathBuf::new()),
                _ => (root.clone(), PathBuf::from(d.name.as_str())),
            };
            out.push(Target::below(&base, &dir));
            for sub in ["blk", "providers", "providers/net"] {
                out.push(Target::below(&base, dir.join(sub)));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(root: &Path, state: SourceState) -> SourceScan {
        SourceScan {
            spec: crate::source::SourceSpec::directory(
                "user".parse().unwrap(),
                root,
                Trust::Untrusted,
            ),
            state,
            diagnostics: Vec::new(),
            definitions: Vec::new(),
            exhausted: false,
        }
    }

    #[test]
    fn failed_and_missing_sources_stay_watched() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path();
        let failed = base.join("failed");
        assert_eq!(
            targets_of(&[scan(&failed, SourceState::Failed)]),
            [Target::root(&failed), Target::root(base)]
        );
        let missing = base.join("a/b/c");
        let t = targets_of(&[scan(&missing, SourceState::Missing)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].root, base);
        assert_eq!(t[0].awaits.as_deref(), Some(base.join("a").as_path()));
        assert!(!t[0].arrived());
        std::fs::create_dir(base.join("a")).unwrap();
        assert!(t[0].arrived(), "what it waits for is there");
        let t = targets_of(&[scan(&missing, SourceState::Missing)]);
        assert_eq!(t[0].root, base.join("a"));
        let mut gone = scan(&failed, SourceState::Unavailable);
        gone.spec.presence = Presence::Gone;
        assert!(targets_of(&[gone]).is_empty());
    }

    #[test]
    fn targets_below_a_root_never_follow_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src");
        std::fs::create_dir_all(root.join("vm/blk")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("evil")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("vm/providers")).unwrap();
        assert!(Target::root(&root).open().is_ok());
        assert!(Target::below(&root, "vm/blk").open().is_ok());
        assert!(Target::below(&root, "evil").open().is_err());
        assert!(Target::below(&root, "vm/providers").open().is_err());
        assert!(
            Target::below(&root, "evil/ssl").open().is_err(),
            "not through a symlink either"
        );
        assert!(Target::below(&root, "../..").open().is_err());
    }
}
