//! Noticing changes in directory sources: inotify, debounced into rescans.
//!
//! inotify is not recursive, so after every rescan the rescan's commit sends
//! the directories to watch (the [`Target`]s that
//! [`crate::definition::watch_targets::targets_of`] computes from the scans)
//! on a [`tokio::sync::watch`] channel. Each is opened without following
//! symlinks and watched through `/proc/self/fd/N`. A watch that cannot be
//! added yet (the directory does not exist) or that the kernel dropped (the
//! directory was removed) is tried again after the next rescan.
//!
//! A watch on an ancestor is added after the rescan that asked for it: if
//! the next directory on the way appeared in between, no event will come
//! for it, so adding such a watch checks for it and rescans at once.
//!
//! Events are only hints: after a quiet period (the debounce), one rescan
//! re-reads everything. `IN_Q_OVERFLOW` (events were lost) also triggers one.

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::RescanTrigger;

use crate::definition::watch_targets::Target;
use crate::rescan::Rescans;

/// The longest a steady stream of events can delay a rescan.
const MAX_DELAY: Duration = Duration::from_secs(2);

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
    mut targets: watch::Receiver<Arc<Vec<Target>>>,
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
