//! [`Watch`]: a subscription that survives reconnects and daemon restarts,
//! and keeps a local [`Mirror`] of the catalog.
//!
//! It reconnects with exponential backoff and jitter, resumes from the last
//! generation it applied (so nothing is missed or repeated), and when the
//! daemon restarted (new epoch) or the watch fell behind, it takes the new
//! snapshot and reports how it differs from what the mirror held, so a UI
//! never has to diff, resume or deduplicate by itself.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use vm_catalog_protocol::{
    Change, ChangeItem, ChangeKind, Cursor, Event, ResetReason, SourceEntry, SourceLabel,
    Subscribe, VmEntry, VmName, VmState,
};

use crate::client::{CallStream, Client, ConnectOptions};
use crate::error::{Error, Result};

/// A local copy of the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirror {
    cursor: Option<Cursor>,
    vms: BTreeMap<(VmName, SourceLabel), VmEntry>,
    sources: BTreeMap<SourceLabel, SourceEntry>,
}

impl Mirror {
    /// The position of the copy (`None` before the first snapshot).
    pub fn cursor(&self) -> Option<Cursor> {
        self.cursor
    }

    /// Every definition, by name then source label.
    pub fn vms(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values()
    }

    /// The active VMs.
    pub fn active(&self) -> impl Iterator<Item = &VmEntry> {
        self.vms.values().filter(|e| e.state == VmState::Active)
    }

    /// The definition that claims `name`: active, rejected or unavailable
    /// (not shadowed).
    pub fn get(&self, name: &str) -> Option<&VmEntry> {
        self.vms
            .values()
            .filter(|e| e.name.as_str() == name)
            .find(|e| e.state != VmState::Shadowed)
    }

    /// Every source.
    pub fn sources(&self) -> impl Iterator<Item = &SourceEntry> {
        self.sources.values()
    }

    /// Applies one generation's changes.
    pub fn apply(&mut self, generation: u64, changes: &[Change]) {
        for c in changes {
            match (&c.item, c.kind) {
                (ChangeItem::Vm(e), ChangeKind::Removed) => {
                    self.vms.remove(&(e.name.clone(), e.source.clone()));
                }
                (ChangeItem::Vm(e), _) => {
                    self.vms
                        .insert((e.name.clone(), e.source.clone()), e.clone());
                }
                (ChangeItem::Source(s), ChangeKind::Removed) => {
                    self.sources.remove(&s.label);
                }
                (ChangeItem::Source(s), _) => {
                    self.sources.insert(s.label.clone(), s.clone());
                }
            }
        }
        if let Some(c) = &mut self.cursor {
            c.generation = generation;
        }
    }

    /// What changed from `self` to `new`, as changes of `new`'s generation.
    pub fn diff(&self, new: &Mirror) -> Vec<Change> {
        let generation = new.cursor.map(|c| c.generation).unwrap_or(0);
        let mut out = Vec::new();
        let mut push = |kind, item| {
            out.push(Change {
                generation,
                kind,
                item,
            })
        };
        for (k, old) in &self.sources {
            if !new.sources.contains_key(k) {
                push(ChangeKind::Removed, ChangeItem::Source(old.clone()));
            }
        }
        for (k, s) in &new.sources {
            match self.sources.get(k) {
                None => push(ChangeKind::Added, ChangeItem::Source(s.clone())),
                Some(old) => {
                    // Revisions restart with every epoch: they are not a change.
                    let old = SourceEntry {
                        revision: s.revision,
                        ..old.clone()
                    };
                    if old != *s {
                        let only_state = SourceEntry {
                            state: s.state,
                            ..old
                        } == *s;
                        push(kind_of(only_state), ChangeItem::Source(s.clone()));
                    }
                }
            }
        }
        for (k, old) in &self.vms {
            if !new.vms.contains_key(k) {
                push(ChangeKind::Removed, ChangeItem::Vm(old.clone()));
            }
        }
        for (k, e) in &new.vms {
            match self.vms.get(k) {
                None => push(ChangeKind::Added, ChangeItem::Vm(e.clone())),
                Some(old) => {
                    let old = VmEntry {
                        revision: e.revision,
                        ..old.clone()
                    };
                    if old != *e {
                        let only_state = VmEntry {
                            state: e.state,
                            ..old
                        } == *e;
                        push(kind_of(only_state), ChangeItem::Vm(e.clone()));
                    }
                }
            }
        }
        out
    }
}

/// `StateChanged` when only the state differs, `Changed` otherwise.
fn kind_of(only_state: bool) -> ChangeKind {
    if only_state {
        ChangeKind::StateChanged
    } else {
        ChangeKind::Changed
    }
}

/// What a [`Watch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// The mirror was rebuilt from a snapshot (first connection, daemon
    /// restart, history too old, or the watch fell behind). `changes` is
    /// what differs from the mirror before (on the first connection: every
    /// entry, as added).
    Reset {
        /// The snapshot's position.
        cursor: Cursor,
        /// Why a snapshot.
        reason: ResetReason,
        /// How the new mirror differs from the old one.
        changes: Vec<Change>,
    },
    /// After a reconnect, the missed generations were replayed (each was
    /// reported as [`WatchEvent::Changes`]) and the mirror is up to date.
    Resumed {
        /// The position before the disconnect.
        from: Cursor,
        /// The current position.
        to: Cursor,
    },
    /// One generation's changes, already applied to the mirror.
    Changes {
        /// The generation.
        generation: u64,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// The connection was lost or could not be made; the watch tries again
    /// after `retry_in` (on the next call to [`Watch::next`]).
    Disconnected {
        /// Why.
        error: Error,
        /// The backoff delay.
        retry_in: Duration,
    },
}

/// Exponential backoff with jitter: 100 ms doubling to 30 s, each delay
/// drawn from [d/2, d].
#[derive(Debug, Clone)]
struct Backoff {
    next: Duration,
}

const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

impl Backoff {
    fn new() -> Self {
        Backoff {
            next: BACKOFF_FIRST,
        }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_FIRST;
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (d * 2).min(BACKOFF_MAX);
        let rnd = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = d / 2;
        half + Duration::from_nanos(rnd % (half.as_nanos() as u64 + 1))
    }
}

enum Phase {
    /// Between `Reset` and `Synced`: the new mirror being filled.
    Snapshot { reason: ResetReason, new: Mirror },
    /// Between `Resumed` and `Synced`.
    Resuming { from: Cursor },
    /// Live batches.
    Live,
}

/// A subscription that reconnects, resumes and keeps a [`Mirror`].
///
/// ```no_run
/// # async fn demo() -> vm_catalog::Result<()> {
/// use vm_catalog::{Watch, WatchEvent};
/// let mut watch = Watch::new("/run/vm-catalog/socket");
/// loop {
///     match watch.next().await? {
///         WatchEvent::Changes { changes, .. } | WatchEvent::Reset { changes, .. } => {
///             for c in changes { println!("{:?}", c.kind); }
///         }
///         WatchEvent::Disconnected { error, retry_in } => eprintln!("{error}, retrying in {retry_in:?}"),
///         WatchEvent::Resumed { .. } => {}
///     }
///     println!("{} active VMs", watch.mirror().active().count());
/// }
/// # }
/// ```
pub struct Watch {
    path: PathBuf,
    opts: ConnectOptions,
    mirror: Mirror,
    conn: Option<(Client, CallStream<Subscribe>)>,
    phase: Phase,
    /// Parts of a generation split across frames.
    partial: Vec<Change>,
    backoff: Backoff,
    wait: Option<Duration>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("path", &self.path)
            .field("cursor", &self.mirror.cursor)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Watch {
    /// A watch of the daemon at `path`, starting from nothing.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self::since(path, None)
    }

    /// A watch that resumes from `since`, for a client that keeps its own
    /// copy of the catalog: it gets the changes after `since` (or a reset).
    /// Its [`Watch::mirror`] holds only what it has seen since then; to
    /// resume a mirror, use [`Watch::resume`].
    pub fn since(path: impl Into<PathBuf>, since: Option<Cursor>) -> Self {
        Watch {
            path: path.into(),
            opts: ConnectOptions {
                client_name: format!("vm-catalog-watch/{}", env!("CARGO_PKG_VERSION")),
                ..ConnectOptions::default()
            },
            mirror: Mirror {
                cursor: since,
                ..Mirror::default()
            },
            conn: None,
            phase: Phase::Live,
            partial: Vec::new(),
            backoff: Backoff::new(),
            wait: None,
        }
    }

    /// A watch that resumes a mirror saved earlier (from
    /// [`Watch::mirror`]): the missed changes are applied to it, and a reset
    /// reports exactly how the new snapshot differs from it.
    pub fn resume(path: impl Into<PathBuf>, mirror: Mirror) -> Self {
        let mut w = Self::since(path, mirror.cursor);
        w.mirror = mirror;
        w
    }

    /// The local copy of the catalog.
    pub fn mirror(&self) -> &Mirror {
        &self.mirror
    }

    /// The next event. Only errors that retrying cannot fix (no common
    /// protocol version) are returned as `Err`; everything else is reported
    /// as [`WatchEvent::Disconnected`] and retried.
    pub async fn next(&mut self) -> Result<WatchEvent> {
        loop {
            if self.conn.is_none() {
                if let Some(d) = self.wait.take() {
                    tokio::time::sleep(d).await;
                }
                match self.connect().await {
                    Ok(c) => self.conn = Some(c),
                    Err(e @ Error::Incompatible { .. }) => return Err(e),
                    Err(error) => return Ok(self.disconnected(error)),
                }
            }
            let (_, stream) = self.conn.as_mut().expect("connected above");
            let event = match stream.next().await {
                Some(Ok(ev)) => ev,
                Some(Err(error)) => return Ok(self.disconnected(error)),
                None => return Ok(self.disconnected(Error::Disconnected(None))),
            };
            if let Some(out) = self.on_event(event) {
                return Ok(out);
            }
        }
    }

    async fn connect(&mut self) -> Result<(Client, CallStream<Subscribe>)> {
        let client = Client::connect_with(&self.path, &self.opts).await?;
        let stream = client.subscribe(self.mirror.cursor).await?;
        self.phase = Phase::Live;
        self.partial.clear();
        Ok((client, stream))
    }

    fn disconnected(&mut self, error: Error) -> WatchEvent {
        self.conn = None;
        let retry_in = self.backoff.step();
        self.wait = Some(retry_in);
        WatchEvent::Disconnected { error, retry_in }
    }

    fn on_event(&mut self, event: Event) -> Option<WatchEvent> {
        match event {
            Event::Reset { cursor, reason } => {
                self.partial.clear();
                self.phase = Phase::Snapshot {
                    reason,
                    new: Mirror {
                        cursor: Some(cursor),
                        ..Mirror::default()
                    },
                };
                None
            }
            Event::SnapshotPage { vms, sources } => {
                if let Phase::Snapshot { new, .. } = &mut self.phase {
                    for e in vms {
                        new.vms.insert((e.name.clone(), e.source.clone()), e);
                    }
                    for s in sources {
                        new.sources.insert(s.label.clone(), s);
                    }
                }
                None
            }
            Event::Resumed { from } => {
                self.phase = Phase::Resuming { from };
                None
            }
            Event::Synced { cursor } => {
                self.backoff.reset();
                match std::mem::replace(&mut self.phase, Phase::Live) {
                    Phase::Snapshot { reason, new, .. } => {
                        let changes = self.mirror.diff(&new);
                        self.mirror = new;
                        Some(WatchEvent::Reset {
                            cursor,
                            reason,
                            changes,
                        })
                    }
                    Phase::Resuming { from } => {
                        self.mirror.cursor = Some(cursor);
                        Some(WatchEvent::Resumed { from, to: cursor })
                    }
                    Phase::Live => None,
                }
            }
            Event::Batch {
                generation,
                changes,
                last,
            } => {
                self.partial.extend(changes);
                if !last {
                    return None;
                }
                let changes = std::mem::take(&mut self.partial);
                // A batch the mirror already holds (never expected; cheap to check).
                if self
                    .mirror
                    .cursor
                    .is_some_and(|c| c.generation >= generation)
                {
                    return None;
                }
                self.mirror.apply(generation, &changes);
                Some(WatchEvent::Changes {
                    generation,
                    changes,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_catalog_protocol::Epoch;

    fn vm(name: &str, state: VmState, path: &str) -> VmEntry {
        VmEntry {
            name: name.parse().unwrap(),
            source: "builtin".parse().unwrap(),
            state,
            path: path.into(),
            view: None,
            service: None,
            providers: vec![],
            diagnostics: vec![],
            restart_pending: false,
            shadowed_by: None,
            revision: 1,
        }
    }

    fn mirror(generation: u64, vms: &[VmEntry]) -> Mirror {
        Mirror {
            cursor: Some(Cursor {
                epoch: Epoch(1),
                generation,
            }),
            vms: vms
                .iter()
                .map(|e| ((e.name.clone(), e.source.clone()), e.clone()))
                .collect(),
            sources: BTreeMap::new(),
        }
    }

    #[test]
    fn diff_reports_added_removed_changed_and_state_changed() {
        let old = mirror(
            1,
            &[
                vm("a", VmState::Active, "/a"),
                vm("b", VmState::Active, "/b"),
                vm("c", VmState::Active, "/c"),
            ],
        );
        let new = mirror(
            5,
            &[
                vm("b", VmState::Active, "/b2"),
                vm("c", VmState::Rejected, "/c"),
                vm("d", VmState::Active, "/d"),
            ],
        );
        let kinds: Vec<_> = old
            .diff(&new)
            .iter()
            .map(|c| match &c.item {
                ChangeItem::Vm(e) => (e.name.to_string(), c.kind, c.generation),
                ChangeItem::Source(_) => unreachable!(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("a".into(), ChangeKind::Removed, 5),
                ("b".into(), ChangeKind::Changed, 5),
                ("c".into(), ChangeKind::StateChanged, 5),
                ("d".into(), ChangeKind::Added, 5),
            ]
        );
        let mut applied = old.clone();
        applied.apply(5, &old.diff(&new));
        assert_eq!(applied, new);
    }

    /// Regression: after a daemon restart every revision differs (they count
    /// generations of the new epoch); that alone reported every entry as
    /// state-changed.
    #[test]
    fn diff_ignores_revisions() {
        let old = mirror(9, &[vm("a", VmState::Active, "/a")]);
        let mut e = vm("a", VmState::Active, "/a");
        e.revision = 7;
        let new = mirror(1, &[e]);
        assert!(old.diff(&new).is_empty(), "{:?}", old.diff(&new));
    }

    #[test]
    fn a_batch_in_parts_is_applied_once_complete() {
        let mut w = Watch::new("/nonexistent");
        w.mirror = mirror(1, &[]);
        let change = |n: &str| Change {
            generation: 2,
            kind: ChangeKind::Added,
            item: ChangeItem::Vm(vm(n, VmState::Active, "/x")),
        };
        assert!(
            w.on_event(Event::Batch {
                generation: 2,
                changes: vec![change("a")],
                last: false
            })
            .is_none()
        );
        assert_eq!(w.mirror.vms().count(), 0);
        let ev = w.on_event(Event::Batch {
            generation: 2,
            changes: vec![change("b")],
            last: true,
        });
        assert!(
            matches!(ev, Some(WatchEvent::Changes { generation: 2, ref changes }) if changes.len() == 2)
        );
        assert_eq!(w.mirror.vms().count(), 2);
        assert_eq!(w.mirror.cursor().unwrap().generation, 2);
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.step();
        assert!(first >= BACKOFF_FIRST / 2 && first <= BACKOFF_FIRST);
        for _ in 0..20 {
            assert!(b.step() <= BACKOFF_MAX);
        }
        b.reset();
        assert!(b.step() <= BACKOFF_FIRST);
    }
}
