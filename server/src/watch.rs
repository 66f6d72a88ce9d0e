//! Noticing changes in directory sources: inotify, debounced into rescans.
//!
//! inotify is not recursive, so the pipeline hands over, after every rescan,
//! the directories to watch: each source root, each definition directory and
//! its `blk/`, `providers/` and `providers/net/`. Watches are added with
//! `IN_DONT_FOLLOW | IN_ONLYDIR`, so a symlink planted in a source is never
//! followed. Events are only hints: after a quiet period (the debounce), one
//! rescan re-reads everything. `IN_Q_OVERFLOW` (events were lost) also
//! triggers a rescan.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::RescanTrigger;

use crate::rescan::Rescans;

/// The longest a steady stream of events can delay a rescan.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Watches the directories published on `paths` and triggers a rescan after
/// `debounce` of quiet following any change. Runs until `shutdown`.
pub async fn run(
    mut paths: watch::Receiver<Arc<Vec<PathBuf>>>,
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
    let mut current: HashMap<PathBuf, WatchDescriptor> = HashMap::new();
    let mask = WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::CLOSE_WRITE
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::DONT_FOLLOW
        | WatchMask::ONLYDIR;
    let mut pending: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    loop {
        let deadline = pending.map(|(quiet, cap)| quiet.min(cap));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = paths.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted: HashSet<PathBuf> = paths.borrow_and_update().iter().cloned().collect();
                current.retain(|p, wd| {
                    let keep = wanted.contains(p);
                    if !keep {
                        let _ = watches.remove(wd.clone());
                    }
                    keep
                });
                for p in wanted {
                    if current.contains_key(&p) {
                        continue;
                    }
                    // Directories that vanished since the scan just fail here.
                    if let Ok(wd) = watches.add(&p, mask) {
                        current.insert(p, wd);
                    }
                }
                tracing::debug!(watches = current.len(), "watching source directories");
            }
            event = stream.next() => {
                let Some(event) = event else { return };
                let overflow = event.as_ref().is_ok_and(|e| e.mask.contains(EventMask::Q_OVERFLOW));
                if overflow {
                    tracing::info!("inotify queue overflowed; rescanning");
                }
                if let Ok(e) = &event {
                    // A watch removed by the kernel (directory gone) is
                    // re-added, or not, after the next rescan.
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

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
