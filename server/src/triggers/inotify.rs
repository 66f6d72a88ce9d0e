//! Noticing changes in directory sources: inotify, debounced into rescans.
//!
//! inotify is not recursive, so after every rescan the rescan's commit sends
//! the directories to watch (the [`Target`]s that
//! [`crate::definition::watch_targets::targets_of`] computes from the scans)
//! on a [`tokio::sync::watch`] channel. Each is opened without following
//! symlinks and watched through `/proc/self/fd/N`. The watches are kept in
//! step with the rescans' lists at the cost of what changed (`table.rs`):
//! a definition's directory that cannot be watched yet (it does not exist)
//! is tried again after the rescan that follows an event naming that
//! definition; one the kernel dropped (the directory was removed), and the
//! watches of a directory that moved and of those below it (a watch follows
//! its directory, not its path), after the next rescan.
//!
//! A watch on an ancestor is added after the rescan that asked for it: if
//! the next directory on the way appeared in between, no event will come
//! for it, so adding such a watch checks for it and rescans at once.
//! Likewise any new watch: a directory changed after its rescan's scan
//! started but before its watch was added (a VM copied in with `cp -R`,
//! caught half-way) changed unseen. Once the watch is in place, its
//! directory's ctime says so, and the directory is marked as changed,
//! as an event on it would have (see `table::CLOCK_SLACK_MS`).
//!
//! After a quiet period (the debounce), one rescan follows, told which
//! definitions or source entries the events named (each target's
//! [`Scope`]: [`Dirty`]); `IN_Q_OVERFLOW` (events were lost), an event on
//! a source root itself and any event on a missing or failed source's
//! watches mark everything. The rescan reads again only the source
//! entries marked and keeps what the others gave in the last rescan
//! (`rescan::plan::Plan::changed`); everything marked reads every source
//! whole. A change no watch sees (a file outside the watched directories,
//! such as a trusted link's target) is read at the next whole rescan.
//!
//! A watch the kernel refuses for a directory that is there (`ENOSPC`: the
//! user's `max_user_watches` is reached) would leave that directory's
//! changes unseen by incremental rescans: while any watch is refused, a
//! warning says so once and every rescan the events ask for reads
//! everything (what whole rescans always did).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use inotify::{EventMask, Inotify, Watches};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::RescanTrigger;

use crate::definition::watch_targets::{Dirty, WatchSet};
use crate::rescan::Rescans;

mod table;

#[cfg(test)]
use table::CLOCK_SLACK_MS;
use table::{Synced, Table};

/// The longest a steady stream of events can delay a rescan.
const MAX_DELAY: Duration = Duration::from_secs(2);

/// Watches the targets set on `targets` and triggers a rescan after
/// `debounce` of quiet following any change. Runs until `shutdown`.
pub async fn run(
    mut targets: watch::Receiver<Arc<WatchSet>>,
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
    let mut table = Table::default();
    let mut pending: Option<(tokio::time::Instant, tokio::time::Instant)> = None;
    let mut dirty = Dirty::Nothing;
    // Whether the kernel refused a watch (the watch limit, memory): then
    // every rescan the events ask for reads everything.
    let mut blind = false;
    loop {
        let deadline = pending.map(|(quiet, cap)| quiet.min(cap));
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = targets.changed() => {
                if changed.is_err() {
                    return;
                }
                let wanted = targets.borrow_and_update().clone();
                let synced = table.sync(&mut watches, &wanted);
                blind = note_refusals(blind, &synced);
                if synced.arrived {
                    tracing::debug!("a directory on the way to a missing source appeared; rescanning");
                    rescans.trigger(RescanTrigger::Watch);
                }
                if !synced.changed_unseen.is_empty() {
                    tracing::debug!(
                        directories = synced.changed_unseen.len(),
                        "directories changed before their watch was added; rescanning them"
                    );
                    for scope in &synced.changed_unseen {
                        dirty.mark(scope, None);
                    }
                    postpone(&mut pending, debounce);
                }
            }
            event = stream.next() => {
                let Some(event) = event else { return };
                if mark(&event, &mut watches, &mut table, &mut dirty) {
                    postpone(&mut pending, debounce);
                }
            }
            _ = sleep_until(deadline), if deadline.is_some() => {
                pending = None;
                if blind {
                    // Some directory has no watch: what changed there
                    // sent no event, so only a whole rescan sees it.
                    dirty.mark_whole();
                }
                rescans.trigger_changed(std::mem::take(&mut dirty));
            }
        }
    }
}

/// Marks what one inotify event says changed in `dirty`; false when it
/// says nothing changed (the kernel dropped a watch: its directory is
/// gone, and the next rescan says whether to watch it again).
fn mark(
    event: &std::io::Result<inotify::Event<std::ffi::OsString>>,
    watches: &mut Watches,
    table: &mut Table,
    dirty: &mut Dirty,
) -> bool {
    match event {
        Ok(e) if e.mask.contains(EventMask::Q_OVERFLOW) => {
            tracing::info!("inotify queue overflowed; rescanning");
            dirty.mark_whole();
            table.touch(None, None);
        }
        Ok(e) if e.mask.contains(EventMask::IGNORED) => {
            table.dropped(&e.wd);
            return false;
        }
        Ok(e) => {
            // The scope before a move forgets the watch.
            let scope = table.scope(&e.wd);
            if e.mask.contains(EventMask::MOVE_SELF) {
                table.moved(watches, &e.wd);
            }
            match &scope {
                Some(scope) => dirty.mark(scope, e.name.as_deref()),
                None => dirty.mark_whole(),
            }
            table.touch(scope.as_ref(), e.name.as_deref());
        }
        Err(_) => {
            dirty.mark_whole();
            table.touch(None, None);
        }
    }
    true
}

/// Puts the pending rescan `debounce` after now (a quiet period), but no
/// later than [`MAX_DELAY`] after the first change it covers.
fn postpone(
    pending: &mut Option<(tokio::time::Instant, tokio::time::Instant)>,
    debounce: Duration,
) {
    let now = tokio::time::Instant::now();
    let cap = pending.map(|(_, cap)| cap).unwrap_or(now + MAX_DELAY);
    *pending = Some((now + debounce, cap));
}

/// Says once when watches start being refused (a warning: changes in
/// those directories send no event) and when they no longer are; returns
/// whether some are refused now.
fn note_refusals(was_blind: bool, synced: &Synced) -> bool {
    let blind = synced.refused > 0;
    if blind && !was_blind {
        tracing::warn!(
            refused = synced.refused,
            error = %synced.refusal.as_ref().map(|e| e.to_string()).unwrap_or_default(),
            "cannot watch every source directory (the inotify watch limit, fs.inotify.max_user_watches?); every rescan a change asks for reads everything until they are all watched"
        );
    } else if !blind && was_blind {
        tracing::info!("every source directory is watched again; rescans read what changed");
    }
    blind
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
    use crate::definition::watch_targets::{Scope, Target};
    use crate::rescan::Requested;
    use std::path::Path;
    use vm_catalog_protocol::{SourceLabel, VmName};

    fn ctime_ms(p: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        m.ctime() as u64 * 1000 + m.ctime_nsec() as u64 / 1_000_000
    }

    fn definition(root: &Path, vm: &str) -> Target {
        let mut t = Target::below(root, vm);
        t.scope = Scope::Definition(
            SourceLabel::try_from("user").unwrap(),
            VmName::try_from(vm).unwrap(),
        );
        t
    }

    /// A directory `vm` made now, watched (as a definition's) with a scan
    /// that started `offset_ms` after its ctime (negative: before); what
    /// the first and a second sync found, and the watches held.
    fn watched_after(offset_ms: i64) -> (Synced, Synced, usize) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vm")).unwrap();
        let changed = ctime_ms(&dir.path().join("vm"));
        let inotify = Inotify::init().unwrap();
        let mut watches = inotify.watches();
        let mut table = Table::default();
        let set = WatchSet {
            targets: Arc::new(vec![definition(dir.path(), "vm")]),
            scan_started_unix_ms: changed.saturating_add_signed(offset_ms),
        };
        let first = table.sync(&mut watches, &set);
        let second = table.sync(&mut watches, &set);
        (first, second, table.len())
    }

    /// Regression: a VM copied in with `cp -R` was caught half-way by a
    /// rescan, and what was written before its directories' watches were
    /// added was never read (it stayed `missing-kernel` for good).
    #[test]
    fn a_directory_changed_after_the_scan_started_but_before_its_watch_is_rescanned() {
        // The scan started before the directory last changed.
        let (first, second, _) = watched_after(-1000);
        assert_eq!(
            first.changed_unseen,
            vec![Scope::Definition(
                SourceLabel::try_from("user").unwrap(),
                VmName::try_from("vm").unwrap(),
            )]
        );
        // Already watched: events cover it, nothing to catch up.
        assert!(second.changed_unseen.is_empty());
    }

    /// Watches `dir/vm` (as a definition's) with [`run`], on a recording
    /// handle; returns it and what stops the watcher.
    async fn watching(dir: &Path, debounce: Duration) -> (Requested, CancellationToken) {
        let (rescans, requested) = Rescans::recording();
        let set = WatchSet {
            targets: Arc::new(vec![definition(dir, "vm")]),
            // No directory counts as changed before its watch.
            scan_started_unix_ms: u64::MAX,
        };
        let (tx, mut rx) = watch::channel(Arc::new(set));
        rx.mark_changed();
        let shutdown = CancellationToken::new();
        tokio::spawn(run(rx, rescans, debounce, shutdown.clone()));
        // Keep the channel open, as the daemon's commit does.
        tokio::spawn({
            let shutdown = shutdown.clone();
            async move {
                shutdown.cancelled().await;
                drop(tx);
            }
        });
        // The watcher takes the set and adds its watch.
        tokio::time::sleep(Duration::from_millis(1)).await;
        (requested, shutdown)
    }

    fn touch(dir: &Path, n: u32) {
        std::fs::write(dir.join("vm").join(format!("f{n}")), b"x").unwrap();
    }

    fn the_vm_changed() -> Option<(RescanTrigger, Dirty)> {
        let scope = Scope::Definition(
            SourceLabel::try_from("user").unwrap(),
            VmName::try_from("vm").unwrap(),
        );
        let mut dirty = Dirty::Nothing;
        dirty.mark(&scope, None);
        Some((RescanTrigger::Watch, dirty))
    }

    /// The debounce is tokio's: on its paused clock (time moves only when
    /// every task waits, so the event is read at once however loaded the
    /// machine is), the rescan is asked for exactly one debounce after the
    /// last event.
    #[tokio::test(start_paused = true)]
    async fn a_rescan_follows_a_quiet_debounce_after_the_last_event() {
        const DEBOUNCE: Duration = Duration::from_millis(200);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vm")).unwrap();
        let (requested, shutdown) = watching(dir.path(), DEBOUNCE).await;
        assert_eq!(requested.next(), None);
        touch(dir.path(), 0);
        tokio::time::sleep(DEBOUNCE / 2).await;
        // Another event restarts the quiet period.
        touch(dir.path(), 1);
        tokio::time::sleep(DEBOUNCE - Duration::from_millis(1)).await;
        assert_eq!(requested.next(), None, "still within the debounce");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(requested.next(), the_vm_changed());
        assert_eq!(requested.next(), None, "one rescan for both events");
        shutdown.cancel();
    }

    /// A steady stream of events, each within the debounce of the last,
    /// delays the rescan by at most [`MAX_DELAY`] after the first (exactly,
    /// on tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_of_events_delays_the_rescan_at_most_max_delay() {
        const DEBOUNCE: Duration = Duration::from_millis(200);
        const EVERY: Duration = Duration::from_millis(150);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("vm")).unwrap();
        let (requested, shutdown) = watching(dir.path(), DEBOUNCE).await;
        let first = tokio::time::Instant::now();
        let mut n = 0;
        while first.elapsed() + EVERY < MAX_DELAY {
            touch(dir.path(), n);
            n += 1;
            tokio::time::sleep(EVERY).await;
            assert_eq!(
                requested.next(),
                None,
                "{:?} after the first",
                first.elapsed()
            );
        }
        touch(dir.path(), n);
        tokio::time::sleep_until(first + MAX_DELAY - Duration::from_millis(1)).await;
        assert_eq!(requested.next(), None);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(requested.next(), the_vm_changed(), "at MAX_DELAY");
        shutdown.cancel();
    }

    #[test]
    fn a_directory_unchanged_since_the_scan_started_is_not_rescanned() {
        let (first, _, watched) = watched_after(CLOCK_SLACK_MS as i64 + 1000);
        assert!(first.changed_unseen.is_empty());
        assert_eq!(watched, 1);
    }
}
