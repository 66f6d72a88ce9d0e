//! [`Watch`]: a subscription that survives reconnects and daemon restarts,
//! and keeps a local [`Mirror`] of the catalog.
//!
//! It reconnects with exponential backoff and jitter, resumes from the last
//! generation it applied (so nothing is missed or repeated), and when the
//! daemon restarted (new epoch) or the watch fell behind, it takes the new
//! snapshot and reports how it differs from what the mirror held, so a UI
//! never has to diff, resume or deduplicate by itself.
//!
//! This module follows the subscription; `mirror.rs` holds the [`Mirror`],
//! `backoff.rs` the reconnection delays.

use std::time::Duration;

use vm_catalog_protocol::{Change, Cursor, Event, ResetReason, Subscribe};

use crate::client::{CallStream, Client};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::session::ConnectOptions;

mod backoff;
mod mirror;

use backoff::Backoff;
pub use mirror::Mirror;

/// What a [`Watch`] reports.
#[derive(Debug)]
pub enum WatchEvent {
    /// The mirror was rebuilt from a snapshot (first connection, daemon
    /// restart, history too old, or the watch fell behind). `changes` is
    /// what differs from the mirror before (on the first connection: every
    /// entry, as added).
    Reset {
        /// The position of the snapshot the mirror now holds: a resume after
        /// a disconnect starts from it.
        cursor: Cursor,
        /// Why the daemon sent a snapshot rather than the missed batches.
        reason: ResetReason,
        /// How the new mirror differs from the old one.
        changes: Vec<Change>,
    },
    /// After a reconnect, the missed generations were replayed (each was
    /// reported as [`WatchEvent::Changes`]) and the mirror is up to date.
    Resumed {
        /// The position before the disconnect.
        from: Cursor,
        /// The position the mirror is at now, after the replayed generations.
        to: Cursor,
    },
    /// One generation's changes, already applied to the mirror.
    Changes {
        /// The generation these changes lead to (the catalog's counter,
        /// one more per rescan that changed something).
        generation: u64,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// The connection was lost or could not be made; the watch tries again
    /// after `retry_in` (on the next call to [`Watch::next`]).
    Disconnected {
        /// What broke the connection, or what the connect failed with.
        error: Error,
        /// How long the next [`Watch::next`] waits before it reconnects:
        /// drawn from the upper half of a delay that doubles from 100 ms to
        /// at most 30 s while attempts fail.
        retry_in: Duration,
    },
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
    endpoint: Endpoint,
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
            .field("endpoint", &self.endpoint)
            .field("cursor", &self.mirror.cursor())
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Watch {
    /// A watch of the daemon at `endpoint`, starting from nothing. A path
    /// is the daemon's `SOCK_SEQPACKET` socket; a UI VM watches
    /// [`Endpoint::Vsock`].
    pub fn new(endpoint: impl Into<Endpoint>) -> Self {
        Self::since(endpoint, None)
    }

    /// A watch that resumes from `since`, for a client that keeps its own
    /// copy of the catalog: it gets the changes after `since` (or a reset).
    /// Its [`Watch::mirror`] holds only what it has seen since then; to
    /// resume a mirror, use [`Watch::resume`].
    pub fn since(endpoint: impl Into<Endpoint>, since: Option<Cursor>) -> Self {
        Watch {
            endpoint: endpoint.into(),
            opts: ConnectOptions {
                client_name: format!("vm-catalog-watch/{}", env!("CARGO_PKG_VERSION")),
                ..ConnectOptions::default()
            },
            mirror: Mirror::at(since),
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
    pub fn resume(endpoint: impl Into<Endpoint>, mirror: Mirror) -> Self {
        let mut w = Self::since(endpoint, mirror.cursor());
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
        let client = Client::connect_to(&self.endpoint, &self.opts).await?;
        let stream = client.subscribe(self.mirror.cursor()).await?;
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
                    new: Mirror::at(Some(cursor)),
                };
                None
            }
            Event::SnapshotPage { vms, sources } => {
                if let Phase::Snapshot { new, .. } = &mut self.phase {
                    new.extend(vms, sources);
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
                        self.mirror.set_cursor(cursor);
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
                    .cursor()
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
    use super::mirror::tests::{mirror, vm};
    use super::*;
    use vm_catalog_protocol::{ChangeItem, ChangeKind, VmState};

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
}
