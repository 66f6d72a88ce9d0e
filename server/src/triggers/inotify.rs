//! Noticing changes in directory sources: inotify, debounced into rescans.
//!
//! inotify is not recursive, so after every rescan the rescan hands over
//! the directories to watch ([`Target`]s, through a [`TargetTx`]; see
//! [`targets_of`]): each source root, each definition directory and its
//! `blk/`, `providers/` and `providers/net/`. A source root that does not
//! exist is waited for on its nearest existing ancestor, so that creating
//! it (or any directory on the way) is noticed; a source that failed (too
//! many entries, not a directory, unreadable) stays watched, on its root
//! and on that ancestor, so that fixing it is noticed too. A directory
//! below a source root is opened fd-relative with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` and watched through
//! `/proc/self/fd/N`, so a symlink planted in a source never makes the
//! daemon watch something else. A watch that cannot be added yet (the
//! directory does not exist) or that the kernel dropped (the directory was
//! removed) is tried again after the next rescan.
//!
//! A watch on an ancestor is added after the rescan that asked for it: if
//! the next directory on the way appeared in between, no event will come
//! for it, so adding such a watch checks for it and rescans at once.
//!
//! Events are only hints: after a quiet period (the debounce), one rescan
//! re-reads everything. `IN_Q_OVERFLOW` (events were lost) also triggers one.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::{RescanTrigger, SourceState, Trust};

use crate::definition::SourceScan;
use crate::rescan::Rescans;
use crate::source::Presence;

/// The longest a steady stream of events can delay a rescan.
const MAX_DELAY: Duration = Duration::from_secs(2);

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
    fn arrived(&self) -> bool {
        self.awaits
            .as_deref()
            .is_some_and(|p| std::fs::symlink_metadata(p).is_ok())
    }

    /// Opens the directory: the root as configured, anything below it
    /// without following symlinks or leaving it.
    fn open(&self) -> std::io::Result<OwnedFd> {
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

/// The rescan's end of the target list: it sets the list after every real
/// rescan, changed or not, so that watches that could not be added before
/// (a directory created since) are tried again.
#[derive(Debug)]
pub struct TargetTx(watch::Sender<Arc<Vec<Target>>>);

/// The watcher's end of the target list.
#[derive(Debug)]
pub struct TargetRx(watch::Receiver<Arc<Vec<Target>>>);

/// A target list, empty until the first rescan sets it.
pub fn channel() -> (TargetTx, TargetRx) {
    let (tx, rx) = watch::channel(Arc::new(Vec::new()));
    (TargetTx(tx), TargetRx(rx))
}

impl TargetTx {
    /// Replaces the list (the watcher may be gone: watching is off).
    pub fn set(&self, targets: Vec<Target>) {
        self.0.send_replace(Arc::new(targets));
    }
}

fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// Adds a watch on `t` through a descriptor pinned to the right directory.
fn add(watches: &mut Watches, t: &Target) -> std::io::Result<WatchDescriptor> {
    let fd = t.open()?;
    watches.add(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        mask(),
    )
}

/// Watches the targets set on `targets` and triggers a rescan after
/// `debounce` of quiet following any change. Runs until `shutdown`.
pub async fn run(
    TargetRx(mut targets): TargetRx,
    rescans: Rescans,
    debounce: Duration,
    shutdown: CancellationToken,
) {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch source directories (inotify); changes are seen on rescan only");
            return;
        }
    };
    let mut watches = inotify.watches();
    let mut stream = match inotify.into_event_stream(vec![0u8; 64 * 1024]) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read inotify events");
            return;
        }
    };
    let mut current: HashMap<Target, WatchDescriptor> = HashMap::new();
    let mut pending: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    loop {
        let deadline = pending.map(|(quiet, cap)| quiet.min(cap));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted = targets.borrow_and_update().clone();
                if sync(&mut watches, &mut current, &wanted) {
                    tracing::debug!("a directory on the way to a missing source appeared; rescanning");
                    rescans.trigger(RescanTrigger::Watch);
                }
            }
            event = stream.next() => {
                let Some(event) = event else { return };
                if let Ok(e) = &event {
                    if e.mask.contains(EventMask::Q_OVERFLOW) {
                        tracing::info!("inotify queue overflowed; rescanning");
                    }
                    // The kernel dropped the watch (the directory is gone):
                    // the next rescan says whether to watch it again.
                    if e.mask.contains(EventMask::IGNORED) {
                        current.retain(|_, wd| *wd != e.wd);
                        continue;
                    }
                }
                let now = tokio::time::Instant::now();
                let cap = pending.map(|(_, cap)| cap).unwrap_or(now + MAX_DELAY);
                pending = Some((now + debounce, cap));
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                pending = None;
                rescans.trigger(RescanTrigger::Watch);
            }
        }
    }
}

/// Watches exactly `wanted`: drops the rest, adds what is missing (what
/// cannot be added yet is tried again at the next call). Returns whether a
/// watch just added on an ancestor finds what it waits for already there.
fn sync(
    watches: &mut Watches,
    current: &mut HashMap<Target, WatchDescriptor>,
    wanted: &[Target],
) -> bool {
    let keep: std::collections::HashSet<&Target> = wanted.iter().collect();
    let (kept, dropped): (HashMap<_, _>, HashMap<_, _>) =
        current.drain().partition(|(t, _)| keep.contains(t));
    *current = kept;
    // Two targets can be one directory, and the kernel gives one watch per
    // inode: remove it only when no kept target uses it.
    let in_use: std::collections::HashSet<&WatchDescriptor> = current.values().collect();
    for wd in dropped.into_values() {
        if !in_use.contains(&wd) {
            let _ = watches.remove(wd);
        }
    }
    let mut failed = 0usize;
    let mut arrived = false;
    for t in wanted {
        if current.contains_key(t) {
            continue;
        }
        match add(watches, t) {
            Ok(wd) => {
                arrived |= t.arrived();
                current.insert(t.clone(), wd);
            }
            Err(_) => failed += 1,
        }
    }
    tracing::debug!(
        watches = current.len(),
        not_yet = failed,
        "watching source directories"
    );
    arrived
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
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
