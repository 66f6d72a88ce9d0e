//! The watches the inotify trigger holds, kept in step with each rescan's
//! [`WatchSet`] at the cost of what changed, not of how many directories
//! are watched (10,000 definitions want 40,000 targets, of which about half
//! are not there: `blk/`, `providers/net/` are optional).
//!
//! - **What the list gained and lost.** Two successive lists are compared
//!   by their common beginning and end (the rescans build them in the same
//!   order, and a list no definition came to or left is the same `Arc`):
//!   only the middle is looked up, and each target counts how often the
//!   list names it, so that one named twice is dropped when no copy is
//!   left.
//! - **A directory not there is not tried again at every rescan.** A
//!   definition's directory that cannot be watched yet waits until an
//!   event names that definition (its parent directory, watched, sees it
//!   made; the sync after that event's rescan adds it, and its ctime says
//!   whether it changed unseen before). Other targets (source roots and
//!   their ancestors: a few), those the kernel refused (the watch limit),
//!   dropped (its directory was removed) or that moved are tried at every
//!   sync, as is everything after an event that marks everything.
//! - **Two targets can be one directory**: the kernel gives one watch per
//!   inode, removed when no target uses it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

use std::os::fd::AsRawFd;

use inotify::{WatchDescriptor, WatchMask, Watches};
use vm_catalog_protocol::SourceLabel;

#[cfg(test)]
mod tests;
use crate::definition::watch_targets::{Dirty, Scope, Target, WatchSet};

/// How far a file system's timestamps may lag the clock: they come from the
/// kernel's coarse clock, one scheduler tick behind at most, so a change
/// just after a scan started may carry a time just before it.
pub(super) const CLOCK_SLACK_MS: u64 = 10;

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

/// Adds a watch on `t` through a descriptor pinned to the right directory;
/// with it, the directory's ctime (ms since the Unix epoch) once the watch
/// is in place: a later change makes an event.
fn add(watches: &mut Watches, t: &Target) -> std::io::Result<(WatchDescriptor, u64)> {
    let fd = t.open()?;
    let wd = watches.add(
        Path::new(&format!("/proc/self/fd/{}", fd.as_raw_fd())),
        mask(),
    )?;
    let st = rustix::fs::fstat(&fd)?;
    let ctime_ms = u64::try_from(st.st_ctime)
        .unwrap_or(0)
        .saturating_mul(1000)
        .saturating_add(st.st_ctime_nsec / 1_000_000);
    Ok((wd, ctime_ms))
}

/// Whether a failed watch is the kernel's refusal, not a directory that
/// is not there (yet) or is not a directory: those the rescans know about
/// from their scans.
fn is_refusal(e: &std::io::Error) -> bool {
    !matches!(
        e.raw_os_error(),
        Some(libc::ENOENT | libc::ENOTDIR | libc::ELOOP)
    )
}

/// A definition, as events name it: its source and its directory's name.
type DefinitionKey = (SourceLabel, OsString);

/// A wanted target: how many times the list names it, and its watch once
/// added.
#[derive(Debug)]
struct Slot {
    count: u32,
    wd: Option<WatchDescriptor>,
}

/// What adding the wanted watches found.
#[derive(Debug, Default)]
pub(super) struct Synced {
    /// A watch just added on an ancestor finds what it waits for already there.
    pub(super) arrived: bool,
    /// The scopes of the directories whose new watch came after a change
    /// made since their rescan's scan started.
    pub(super) changed_unseen: Vec<Scope>,
    /// How many watches the kernel refused for a directory that is there
    /// (`ENOSPC` past `max_user_watches`, `ENOMEM`).
    pub(super) refused: usize,
    /// The first refusal's error.
    pub(super) refusal: Option<std::io::Error>,
    /// How many watches were tried (added or not).
    pub(super) tried: usize,
}

/// The watches held, and what to try again.
#[derive(Debug, Default)]
pub(super) struct Table {
    /// The list the last sync applied.
    last: Arc<Vec<Target>>,
    /// Every target the list names.
    targets: HashMap<Arc<Target>, Slot>,
    /// Each watch's targets.
    by_wd: HashMap<WatchDescriptor, Vec<Arc<Target>>>,
    /// Definitions' targets not watched yet, tried when an event names
    /// their definition.
    missing: HashMap<DefinitionKey, Vec<Arc<Target>>>,
    /// Targets not watched, tried at every sync.
    retry: HashSet<Arc<Target>>,
    /// What events named since the last sync.
    touched: Dirty,
    /// The scopes of the watches removed here, until the kernel says they
    /// are gone (`IN_IGNORED`): events it queued before still say what
    /// changed.
    removed: HashMap<WatchDescriptor, Scope>,
}

impl Table {
    /// Watches exactly the targets of `wanted`: drops what the list lost,
    /// adds what it gained, and tries again what is due (see the module
    /// documentation).
    pub(super) fn sync(&mut self, watches: &mut Watches, wanted: &WatchSet) -> Synced {
        let mut due = Vec::new();
        if !Arc::ptr_eq(&self.last, &wanted.targets) {
            let last = std::mem::replace(&mut self.last, wanted.targets.clone());
            let (lost, gained) = middle(&last, &wanted.targets);
            // Gained first: a target in both keeps its watch.
            for t in gained {
                due.extend(self.want(t));
            }
            for t in lost {
                self.release(watches, t);
            }
        }
        due.extend(self.retry.drain());
        match std::mem::take(&mut self.touched) {
            Dirty::Nothing => {}
            Dirty::Whole => due.extend(self.missing.drain().flat_map(|(_, ts)| ts)),
            Dirty::Entries(entries) => {
                for key in entries {
                    due.extend(self.missing.remove(&key).into_iter().flatten());
                }
            }
        }
        let since = wanted.scan_started_unix_ms.saturating_sub(CLOCK_SLACK_MS);
        let mut synced = Synced::default();
        for t in due {
            self.try_add(watches, t, since, &mut synced);
        }
        tracing::debug!(
            watches = self.by_wd.len(),
            tried = synced.tried,
            "watching source directories"
        );
        synced
    }

    /// Notes what an event said changed: the definitions it names have
    /// their missing directories tried at the next sync.
    pub(super) fn touch(&mut self, scope: Option<&Scope>, name: Option<&std::ffi::OsStr>) {
        match scope {
            Some(scope) => self.touched.mark(scope, name),
            None => self.touched.mark_whole(),
        }
    }

    /// What an event on `wd` says changed; `None` for a watch no target
    /// holds. Two targets that are one directory share a watch: their
    /// scopes together, so everything.
    pub(super) fn scope(&self, wd: &WatchDescriptor) -> Option<Scope> {
        let Some(targets) = self.by_wd.get(wd) else {
            return self.removed.get(wd).cloned();
        };
        let first = &targets.first()?.scope;
        Some(match targets.iter().all(|t| t.scope == *first) {
            true => first.clone(),
            false => Scope::Whole,
        })
    }

    /// The kernel dropped `wd` (its directory is gone, or it was removed
    /// here): its targets are tried again at the next sync.
    pub(super) fn dropped(&mut self, wd: &WatchDescriptor) {
        self.removed.remove(wd);
        self.forget(wd);
    }

    /// Forgets `wd`: its targets are tried again at the next sync.
    fn forget(&mut self, wd: &WatchDescriptor) {
        for t in self.by_wd.remove(wd).into_iter().flatten() {
            if let Some(slot) = self.targets.get_mut(&*t) {
                slot.wd = None;
            }
            self.retry.insert(t);
        }
    }

    /// The directory of `wd` moved: its watch, and those of the directories
    /// below it, follow it, and no longer watch the paths their targets
    /// name (a directory made where it was would go unwatched, and its new
    /// path would share its old scope). Removes them, so that the next sync
    /// watches each target where it now is.
    pub(super) fn moved(&mut self, watches: &mut Watches, wd: &WatchDescriptor) {
        let Some(moved) = self.by_wd.get(wd) else {
            return;
        };
        let dirs: Vec<std::path::PathBuf> = moved.iter().map(|d| d.root.join(&d.rel)).collect();
        let mut roots = Roots::default();
        let below: Vec<WatchDescriptor> = self
            .by_wd
            .iter()
            .filter(|(_, ts)| ts.iter().any(|t| dirs.iter().any(|d| roots.is_below(t, d))))
            .map(|(wd, _)| wd.clone())
            .collect();
        for wd in below {
            self.unwatch(watches, wd.clone());
            self.forget(&wd);
        }
    }

    /// How many watches are held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_wd.len()
    }

    /// The targets watched, sorted.
    #[cfg(test)]
    fn watched(&self) -> Vec<Target> {
        let mut out: Vec<Target> = self
            .by_wd
            .values()
            .flatten()
            .map(|t| (**t).clone())
            .collect();
        out.sort();
        out
    }

    /// One more copy of `t` in the list; `t` when it is new (to try).
    fn want(&mut self, t: &Target) -> Option<Arc<Target>> {
        if let Some(slot) = self.targets.get_mut(t) {
            slot.count += 1;
            return None;
        }
        let t = Arc::new(t.clone());
        self.targets.insert(t.clone(), Slot { count: 1, wd: None });
        Some(t)
    }

    /// One copy of `t` fewer in the list; when none is left, its watch is
    /// removed (unless another target uses it).
    fn release(&mut self, watches: &mut Watches, t: &Target) {
        let Some(slot) = self.targets.get_mut(t) else {
            return;
        };
        slot.count -= 1;
        if slot.count > 0 {
            return;
        }
        let Some((t, slot)) = self.targets.remove_entry(t) else {
            return;
        };
        self.retry.remove(&t);
        if let Some(key) = definition_key(&t.scope)
            && let Some(ts) = self.missing.get_mut(&key)
        {
            ts.retain(|m| !Arc::ptr_eq(m, &t));
            if ts.is_empty() {
                self.missing.remove(&key);
            }
        }
        let Some(wd) = slot.wd else {
            return;
        };
        if let Some(ts) = self.by_wd.get_mut(&wd) {
            if ts.len() == 1 {
                self.unwatch(watches, wd.clone());
                self.by_wd.remove(&wd);
            } else {
                ts.retain(|m| !Arc::ptr_eq(m, &t));
            }
        }
    }

    /// Removes the kernel's watch `wd`, keeping its scope until the kernel
    /// says it is gone.
    fn unwatch(&mut self, watches: &mut Watches, wd: WatchDescriptor) {
        if let Some(scope) = self.scope(&wd) {
            self.removed.insert(wd.clone(), scope);
        }
        let _ = watches.remove(wd);
    }

    /// Tries to watch `t` (still wanted, not watched yet); what cannot be
    /// watched waits where the module documentation says.
    fn try_add(&mut self, watches: &mut Watches, t: Arc<Target>, since: u64, synced: &mut Synced) {
        match self.targets.get(&*t) {
            Some(slot) if slot.wd.is_none() => {}
            _ => return,
        }
        synced.tried += 1;
        match add(watches, &t) {
            Ok((wd, ctime_ms)) => {
                synced.arrived |= t.arrived();
                if ctime_ms >= since && t.awaits.is_none() {
                    synced.changed_unseen.push(t.scope.clone());
                }
                if let Some(slot) = self.targets.get_mut(&*t) {
                    slot.wd = Some(wd.clone());
                }
                self.by_wd.entry(wd).or_default().push(t);
            }
            Err(e) if is_refusal(&e) => {
                synced.refused += 1;
                synced.refusal.get_or_insert(e);
                self.retry.insert(t);
            }
            Err(_) => match definition_key(&t.scope) {
                Some(key) => self.missing.entry(key).or_default().push(t),
                None => {
                    self.retry.insert(t);
                }
            },
        }
    }
}

/// The entries of `old` and of `new` between their common beginning and
/// end: what the list lost and what it gained (a target in both, moved
/// in the list, is wanted again then released: it keeps its watch).
fn middle<'a>(old: &'a [Target], new: &'a [Target]) -> (&'a [Target], &'a [Target]) {
    let head = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let (old, new) = (&old[head..], &new[head..]);
    let tail = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    (&old[..old.len() - tail], &new[..new.len() - tail])
}

/// The definition whose directories a target of `scope` is.
fn definition_key(scope: &Scope) -> Option<DefinitionKey> {
    match scope {
        Scope::Definition(label, vm) => Some((label.clone(), OsString::from(vm.as_str()))),
        Scope::Source(_) | Scope::Whole => None,
    }
}

/// How each root seen so far stands to each moved directory: below it,
/// or above it by a relative path, or neither. Most targets share a few
/// roots (the source roots): looking a root up hashes its bytes.
#[derive(Default)]
struct Roots<'a> {
    seen: HashMap<(&'a std::ffi::OsStr, &'a std::ffi::OsStr), (bool, Option<std::path::PathBuf>)>,
}

impl<'a> Roots<'a> {
    /// Whether `t`'s directory is `dir` or below it.
    fn is_below(&mut self, t: &'a Target, dir: &'a Path) -> bool {
        let (within, rest) = self
            .seen
            .entry((t.root.as_os_str(), dir.as_os_str()))
            .or_insert_with(|| {
                let rest = dir.strip_prefix(&t.root).ok().map(Path::to_path_buf);
                (t.root.starts_with(dir), rest)
            });
        *within || rest.as_ref().is_some_and(|rest| t.rel.starts_with(rest))
    }
}
