//! Deleting what is no longer used, under the crash-safety rules.
//!
//! - A compiled database is never deleted or moved while it is
//!   `LIVE/compiled`, while anyone holds the live lock, or while an update
//!   may still switch to it: garbage is collected only while the applier
//!   itself holds the live lock, and at start-up only once nobody works on
//!   the live directory ([`super::quiet`]) — otherwise not at all.
//! - Deleting is off the critical path. At the end of an apply, under the
//!   live lock, the old compiled databases are only *moved* into `trash/`
//!   (one rename each, microseconds); a thread deletes what is in `trash/`
//!   without the lock, since nothing uses it any more. Sources, work
//!   directories and the service directories (`svc/`) that no kept source
//!   links to are used by no s6-rc program: they are moved out without the
//!   lock, by [`Applier::tidy`](crate::apply::Applier::tidy), which the
//!   rescan worker calls after the reply. So the daemon never takes the live
//!   lock after a reply: a `vm-start` right after a rescan does not find it
//!   held (s6-rc without `-b` fails at once on a held lock).
//! - A `LIVE:s6-rc-*` directory that `LIVE` does not point to is removed
//!   only under the live lock, and only when no supervisor runs in it.
//! - Supervisors whose live directory was deleted (an update killed after
//!   its switch, a live directory removed under them) are stopped: no
//!   s6-rc program can reach them, and each counts against s6-svscan's
//!   limit (450 of them made the next update hang).

use std::path::{Path, PathBuf};

use super::live::{Live, Lock};
use super::store::{Store, remove_any};
use super::tools::S6rc;

/// Moves every compiled database of `store` but the live one
/// (`LIVE/compiled`) and `keep` into the trash — if the live lock can be
/// taken now; else they stay until a later apply. Returns whether it ran.
pub(super) fn discard_old_databases(live: &Live, store: &Store, keep: Option<&Path>) -> bool {
    let _lock = match live.try_lock() {
        Lock::Taken(l) => Some(l),
        // Nothing is live: no s6-rc program works on a database of ours.
        Lock::NoLiveDir => None,
        Lock::Held => {
            tracing::debug!("the live directory is locked: old databases stay for now");
            return false;
        }
    };
    let db = live.compiled();
    let kept: Vec<&Path> = db.as_deref().into_iter().chain(keep).collect();
    warn_of(store.discard(store.old_databases(&kept)));
    true
}

/// Moves the sources, work directories and service directories that
/// neither the live database nor `keep` (a database) uses into the trash.
/// No lock: no s6-rc program uses them.
pub(super) fn discard_old_sources(live: &Live, store: &Store, keep: Option<&Path>) {
    let sources: Vec<PathBuf> = live
        .compiled()
        .as_deref()
        .into_iter()
        .chain(keep)
        .filter_map(|db| store.source_of(db))
        .collect();
    let kept: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    warn_of(store.discard(store.old_sources(&kept)));
}

/// Discards everything but the live database and its source, at once: for
/// a caller that holds the live lock, or knows that nobody works on the
/// live directory.
pub(super) fn collect_garbage_locked(live: &Live, store: &Store) {
    let db = live.compiled();
    let source = db.as_deref().and_then(|db| store.source_of(db));
    let keep: Vec<&Path> = db
        .iter()
        .chain(source.iter())
        .map(PathBuf::as_path)
        .collect();
    warn_of(store.collect_garbage(&keep));
}

fn warn_of(failed: Vec<(PathBuf, std::io::Error)>) {
    for (path, e) in failed {
        tracing::warn!(path = %path.display(), error = %e, "cannot remove an old database");
    }
}

/// Removes the `LIVE:s6-rc-*` directories `LIVE` does not point to and no
/// supervisor runs in. The caller holds the live lock.
pub(super) fn remove_stale_live_dirs<T: S6rc>(tools: &mut T, live: &Live) {
    let stale = live.stale_dirs();
    if stale.is_empty() {
        return;
    }
    let supervisors = tools.supervisors(live.path());
    for d in stale {
        if let Some(s) = supervisors.iter().find(|s| s.dir.starts_with(&d)) {
            tracing::warn!(
                dir = %d.display(),
                supervisor = s.pid,
                "a stale live directory still has supervisors: kept"
            );
            continue;
        }
        match remove_any(&d) {
            Ok(()) => tracing::info!(dir = %d.display(), "removed a stale live directory"),
            Err(e) => {
                tracing::warn!(dir = %d.display(), error = %e, "cannot remove a stale live directory")
            }
        }
    }
}

/// Stops the supervisors of deleted live directories. The caller holds the
/// live lock. Returns how many it stopped.
pub(super) fn sweep_supervisors<T: S6rc>(tools: &mut T, live: &Live) -> usize {
    let dead: Vec<u32> = tools
        .supervisors(live.path())
        .iter()
        .filter(|s| s.deleted)
        .map(|s| s.pid)
        .collect();
    if dead.is_empty() {
        return 0;
    }
    let stopped = tools.stop_supervisors(live.scandir(), &dead);
    tracing::warn!(
        found = dead.len(),
        stopped,
        scandir = %live.scandir().display(),
        "stopped the supervisors of deleted live directories (each held a slot of s6-svscan)"
    );
    stopped
}
