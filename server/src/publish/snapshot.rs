//! What one catalog generation looks like to readers, and the retained
//! history of change batches.
//!
//! A [`Published`] is immutable once published; its records and a
//! [`Batch`]'s event bodies are encoded once, on first use, and shared by
//! every reader (see [`vm_catalog_protocol::records`]).

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use vm_catalog_protocol::records::{self, RECORD_BUDGET};

use super::vm_view::{self, Audience};
use crate::catalog::Names;
use vm_catalog_protocol::{
    ApplyOutcome, Change, Cursor, Epoch, RescanOutcome, SourceEntry, SourceLabel, VmEntry, VmState,
};

/// Generations kept for `Subscribe { since }` resumption.
pub const HISTORY: usize = 1024;

/// Everything readers see of one catalog generation.
#[derive(Debug)]
pub struct Published {
    /// Its position.
    pub cursor: Cursor,
    /// Every candidate definition, sorted by name, then precedence.
    pub vms: Vec<VmEntry>,
    /// The sources, in precedence order.
    pub sources: Vec<SourceEntry>,
    /// How its VMs were named (what a qualified reference means).
    pub names: Names,
    /// The encoded records, built once on first use.
    records: OnceLock<Records>,
    /// The same as a UI VM sees them ([`super::vm_view`]).
    vm_records: OnceLock<Records>,
}

/// The records of one generation, encoded once (each trimmed to fit any
/// frame, see [`RECORD_BUDGET`]) and shared by every `ListVms`, `GetVm`,
/// `ListSources` and subscription snapshot.
#[derive(Debug, Clone)]
pub struct Records {
    /// One per entry of [`Published::vms`], in the same order.
    pub vms: Vec<Vec<u8>>,
    /// One per entry of [`Published::sources`].
    pub sources: Vec<Vec<u8>>,
}

/// Rescan and apply status, as `GetInfo` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// The last generation the applier made live.
    pub applied_generation: u64,
    /// The last rescan, dry runs included.
    pub last_rescan: Option<RescanOutcome>,
    /// The last apply attempt.
    pub last_apply: Option<ApplyOutcome>,
}

/// A clone starts without the encoded records: the clone may be changed.
impl Clone for Published {
    fn clone(&self) -> Self {
        Published::new(
            self.cursor,
            self.vms.clone(),
            self.sources.clone(),
            self.names,
        )
    }
}

impl Published {
    /// A generation.
    pub fn new(cursor: Cursor, vms: Vec<VmEntry>, sources: Vec<SourceEntry>, names: Names) -> Self {
        Published {
            cursor,
            vms,
            sources,
            names,
            records: OnceLock::new(),
            vm_records: OnceLock::new(),
        }
    }

    /// The empty catalog of generation 0.
    pub fn empty(epoch: Epoch) -> Self {
        Self::new(
            Cursor {
                epoch,
                generation: 0,
            },
            Vec::new(),
            Vec::new(),
            Names::default(),
        )
    }

    /// The encoded records (built on first use).
    pub fn records(&self) -> &Records {
        self.records.get_or_init(|| Records {
            vms: self
                .vms
                .iter()
                .map(|e| records::encode_vm(e, RECORD_BUDGET))
                .collect(),
            sources: self
                .sources
                .iter()
                .map(|s| records::encode_source(s, RECORD_BUDGET))
                .collect(),
        })
    }

    /// The encoded records as `audience` sees them (built on first use,
    /// once per audience).
    pub fn records_for(&self, audience: Audience) -> &Records {
        match audience {
            Audience::Host => self.records(),
            Audience::Vm => self.vm_records.get_or_init(|| Records {
                vms: self
                    .vms
                    .iter()
                    .map(|e| records::encode_vm(&vm_view::vm(e), RECORD_BUDGET))
                    .collect(),
                sources: self
                    .sources
                    .iter()
                    .map(|s| records::encode_source(&vm_view::source(s), RECORD_BUDGET))
                    .collect(),
            }),
        }
    }

    /// The entry `reference` refers to, by the catalog's one claimant rule
    /// ([`crate::catalog::refer`]), and every other definition of the same
    /// catalog name, or `None` if it refers to nothing.
    pub fn lookup(&self, reference: &str) -> Option<(&VmEntry, Vec<&VmEntry>)> {
        let has_label = |l: &SourceLabel| self.sources.iter().any(|s| &s.label == l);
        let r = crate::catalog::refer(&self.vms, reference, has_label, self.names)?;
        let others = r.others().map(|i| &self.vms[i]).collect();
        Some((&self.vms[r.pick], others))
    }

    /// Number of active VMs.
    pub fn active_count(&self) -> usize {
        self.vms
            .iter()
            .filter(|e| e.state == VmState::Active)
            .count()
    }
}

/// The changes of one generation, shared by every subscriber that gets them.
#[derive(Debug)]
pub struct Batch {
    /// The generation.
    pub generation: u64,
    /// Its changes, in order.
    pub changes: Vec<Change>,
    /// The encoded `Event::Batch` bodies, built once, on first use.
    bodies: OnceLock<Vec<Vec<u8>>>,
    /// The same as a UI VM sees them ([`super::vm_view`]).
    vm_bodies: OnceLock<Vec<Vec<u8>>>,
}

impl Batch {
    /// A batch of `changes` for `generation`.
    pub fn new(generation: u64, changes: Vec<Change>) -> Self {
        Batch {
            generation,
            changes,
            bodies: OnceLock::new(),
            vm_bodies: OnceLock::new(),
        }
    }

    /// The `Event::Batch` bodies of this generation, split to fit any
    /// negotiated frame size; encoded by the first subscriber that sends
    /// them and shared by the others.
    pub fn bodies(&self) -> &[Vec<u8>] {
        self.bodies
            .get_or_init(|| records::batch_bodies(self.generation, &self.changes))
    }
}

impl Batch {
    /// The bodies as `audience` sees them (each encoded once).
    pub fn bodies_for(&self, audience: Audience) -> &[Vec<u8>] {
        match audience {
            Audience::Host => self.bodies(),
            Audience::Vm => self.vm_bodies.get_or_init(|| {
                let changes: Vec<Change> = self.changes.iter().map(vm_view::change).collect();
                records::batch_bodies(self.generation, &changes)
            }),
        }
    }
}

/// The last [`HISTORY`] batches, oldest first.
#[derive(Debug)]
pub(super) struct History(VecDeque<Arc<Batch>>);

impl History {
    /// An empty history.
    pub(super) fn new() -> Self {
        History(VecDeque::with_capacity(HISTORY))
    }

    /// Keeps `batch`, forgetting the oldest one if the history is full.
    pub(super) fn push(&mut self, batch: Arc<Batch>) {
        if self.0.len() == HISTORY {
            self.0.pop_front();
        }
        self.0.push_back(batch);
    }

    /// Every batch after generation `since` up to `now` (`since < now`), or
    /// `None` if some of them are no longer kept.
    pub(super) fn since(&self, since: u64, now: u64) -> Option<Vec<Arc<Batch>>> {
        let batches: Vec<_> = self
            .0
            .iter()
            .filter(|b| b.generation > since)
            .cloned()
            .collect();
        let complete = batches.first().map(|b| b.generation) == Some(since + 1)
            && batches.len() as u64 == now - since;
        complete.then_some(batches)
    }
}
