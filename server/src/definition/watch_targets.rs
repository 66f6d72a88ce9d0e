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
//!
//! Each target has a [`Scope`]: what an event on it says changed. An event
//! in a definition's directories marks that definition; an event on a
//! source root marks the entry it names; anything else (a missing or
//! failed source's watches, an event on a root itself, a lost event) marks
//! everything. [`Dirty`] is what the events since the last rescan marked.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use vm_catalog_protocol::{SourceLabel, SourceState, Trust, VmName};

use super::SourceScan;
use crate::source::Presence;

/// What one rescan asks to watch: its directories, and when its scan
/// started (a directory changed since then, before its watch was added,
/// changed unseen: adding the watch rescans it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WatchSet {
    /// The directories.
    pub targets: Vec<Target>,
    /// When the rescan that found them started, in ms since the Unix epoch.
    pub scan_started_unix_ms: u64,
}

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
    /// What an event on it says changed.
    pub scope: Scope,
}

/// What an event on a watched directory says changed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Scope {
    /// Anything: a missing or failed source's watches.
    #[default]
    Whole,
    /// The root of a source: an event names the entry that changed.
    Source(SourceLabel),
    /// A directory of the definition `name` of a source.
    Definition(SourceLabel, VmName),
}

/// What the watch events since the last rescan marked as changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dirty {
    /// Nothing yet.
    #[default]
    Nothing,
    /// These entries of these sources (a definition's directory name, or
    /// any other name an event in a source root gave).
    Entries(BTreeSet<(SourceLabel, OsString)>),
    /// Anything may have changed: a whole rescan.
    Whole,
}

impl Dirty {
    /// Marks what an event on a target of `scope` says changed; `name` is
    /// the name the event gives, if any (an event on the directory itself
    /// gives none).
    pub fn mark(&mut self, scope: &Scope, name: Option<&OsStr>) {
        let entry = match (scope, name) {
            (Scope::Definition(label, vm), _) => (label.clone(), OsString::from(vm.as_str())),
            (Scope::Source(label), Some(name)) => (label.clone(), name.to_owned()),
            (Scope::Source(_), None) | (Scope::Whole, _) => return self.mark_whole(),
        };
        self.add(Dirty::Entries(BTreeSet::from([entry])));
    }

    /// Marks everything (events were lost, or a whole rescan was asked for).
    pub fn mark_whole(&mut self) {
        *self = Dirty::Whole;
    }

    /// Adds what `other` marked.
    pub fn add(&mut self, other: Dirty) {
        match (&mut *self, other) {
            (_, Dirty::Nothing) | (Dirty::Whole, _) => {}
            (Dirty::Entries(mine), Dirty::Entries(theirs)) => mine.extend(theirs),
            (me, other) => *me = other,
        }
    }
}

impl fmt::Display for Dirty {
    /// `whole`, `nothing`, or the entries as `label/name`, comma-separated.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dirty::Nothing => f.write_str("nothing"),
            Dirty::Whole => f.write_str("whole"),
            Dirty::Entries(entries) => {
                for (i, (label, name)) in entries.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(
                        f,
                        "{sep}{label}/{}",
                        super::display_bytes(name.as_encoded_bytes())
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl Target {
    /// The root itself.
    pub fn root(root: impl Into<PathBuf>) -> Target {
        Target {
            root: root.into(),
            rel: PathBuf::new(),
            awaits: None,
            scope: Scope::Whole,
        }
    }

    /// A directory below a root.
    pub fn below(root: impl Into<PathBuf>, rel: impl Into<PathBuf>) -> Target {
        Target {
            root: root.into(),
            rel: rel.into(),
            awaits: None,
            scope: Scope::Whole,
        }
    }

    /// The same target, whose events say that `scope` changed.
    pub fn of(self, scope: Scope) -> Target {
        Target { scope, ..self }
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
                    scope: Scope::Whole,
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
        let label = &s.spec.label;
        out.push(Target::root(root).of(Scope::Source(label.clone())));
        for d in &s.definitions {
            // A definition is the root's child named after it; in a trusted
            // source it may be a link to a directory elsewhere (a store
            // path), watched where it leads.
            let (base, dir) = match s.spec.trust {
                Trust::Trusted if !d.dir.starts_with(root) => (d.dir.clone(), PathBuf::new()),
                _ => (root.clone(), PathBuf::from(d.name.as_str())),
            };
            let scope = Scope::Definition(label.clone(), d.name.clone());
            out.push(Target::below(&base, &dir).of(scope.clone()));
            for sub in ["blk", "providers", "providers/net"] {
                out.push(Target::below(&base, dir.join(sub)).of(scope.clone()));
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
            entries: None,
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
    fn an_event_marks_its_definition_or_the_entry_it_names_or_everything() {
        let user: SourceLabel = "user".parse().unwrap();
        let vm: VmName = "vm".parse().unwrap();
        let mut d = Dirty::default();
        d.mark(
            &Scope::Definition(user.clone(), vm.clone()),
            Some(OsStr::new("root.img")),
        );
        d.mark(&Scope::Source(user.clone()), Some(OsStr::new("new")));
        d.mark(&Scope::Definition(user.clone(), vm), None);
        assert_eq!(d.to_string(), "user/new, user/vm");
        let mut root_itself = d.clone();
        root_itself.mark(&Scope::Source(user.clone()), None);
        assert_eq!(root_itself, Dirty::Whole);
        d.mark(&Scope::Whole, Some(OsStr::new("a")));
        assert_eq!(d, Dirty::Whole);
        d.mark(&Scope::Source(user), Some(OsStr::new("b")));
        assert_eq!(d, Dirty::Whole, "whole stays whole");
        let mut n = Dirty::Nothing;
        n.add(Dirty::Nothing);
        assert_eq!(n.to_string(), "nothing");
    }

    #[test]
    fn a_ready_sources_targets_name_their_source_and_definition() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("src");
        std::fs::create_dir_all(root.join("vm/blk")).unwrap();
        std::fs::write(root.join("vm/vmlinux"), b"k").unwrap();
        std::fs::write(root.join("vm/blk/root.img"), b"d").unwrap();
        let spec =
            crate::source::SourceSpec::directory("user".parse().unwrap(), &root, Trust::Untrusted);
        let scan =
            crate::definition::scan_source(&spec, &crate::definition::ScanOptions::default());
        let t = targets_of(&[scan]);
        let user: SourceLabel = "user".parse().unwrap();
        assert_eq!(t[0].scope, Scope::Source(user.clone()));
        assert_eq!(t.len(), 5, "{t:?}");
        for d in &t[1..] {
            assert_eq!(
                d.scope,
                Scope::Definition(user.clone(), "vm".parse().unwrap())
            );
        }
        let failed = targets_of(&[self::scan(&root, SourceState::Failed)]);
        assert!(failed.iter().all(|t| t.scope == Scope::Whole));
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
