//! What one catalog generation looks like to readers, and the retained
//! history of change batches.
//!
//! A [`Published`] is immutable once a reader holds it (a generation
//! nobody holds may become the next one in place: [`Published::patch`]).
//! Its records are encoded once per change: [`super::Hub::publish`]
//! encodes the entries its change
//! batch names and takes every other entry's record, as it is, from the
//! generation before ([`Published::encode_after`]); they are shared by every
//! reader (see [`vm_catalog_protocol::records`]). A [`Batch`]'s event bodies
//! are encoded once, on first use.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use vm_catalog_protocol::records::{self, RECORD_BUDGET};

use super::vm_view::{self, Audience};
use crate::catalog::Names;
use vm_catalog_protocol::{
    ApplyOutcome, Change, ChangeItem, ChangeKind, Cursor, Epoch, RescanOutcome, SourceEntry,
    SourceLabel, VmEntry, VmState,
};

/// Generations kept for `Subscribe { since }` resumption.
pub const HISTORY: usize = 1024;

/// Everything readers see of one catalog generation.
#[derive(Debug)]
pub struct Published {
    /// Its position.
    pub cursor: Cursor,
    /// Every candidate definition, sorted by name, then precedence; an
    /// entry that did not change is the catalog's and the previous
    /// generation's (the same `Arc`).
    pub vms: Vec<Arc<VmEntry>>,
    /// The sources, in precedence order.
    pub sources: Vec<SourceEntry>,
    /// How its VMs were named (what a qualified reference means).
    pub names: Names,
    /// The encoded records, built once on first use.
    records: OnceLock<Records>,
    /// The same as a UI VM sees them ([`super::vm_view`]).
    vm_records: OnceLock<Records>,
}

/// The records of one generation (each trimmed to fit any frame, see
/// [`RECORD_BUDGET`]), shared by every `ListVms`, `GetVm`, `ListSources`
/// and subscription snapshot, and by later generations for the entries
/// that did not change.
#[derive(Debug, Clone)]
pub struct Records {
    /// One per entry of [`Published::vms`], in the same order.
    pub vms: Vec<Arc<[u8]>>,
    /// One per entry of [`Published::sources`].
    pub sources: Vec<Arc<[u8]>>,
}

impl Records {
    /// Every record of `vms` and `sources`, as `audience` sees them.
    fn encode(vms: &[Arc<VmEntry>], sources: &[SourceEntry], audience: Audience) -> Records {
        Records {
            vms: vms.iter().map(|e| vm_record(e, audience)).collect(),
            sources: sources.iter().map(|s| source_record(s, audience)).collect(),
        }
    }

    /// The records of `next`, taken from `prev`'s (its entries and their
    /// records) for every entry that `changed` does not name, encoded for
    /// the others. An entry that is `prev`'s (the same `Arc`) is passed
    /// over without a look-up.
    fn carried(
        prev: (&Published, &Records),
        next: &Published,
        changed: &Changed<'_>,
        audience: Audience,
    ) -> Records {
        let (prev, old) = prev;
        let mut j = 0;
        let vms = next
            .vms
            .iter()
            .map(|e| {
                if j < prev.vms.len() && Arc::ptr_eq(&prev.vms[j], e) {
                    j += 1;
                    return old.vms[j - 1].clone();
                }
                if !changed.vms.contains(&(e.name.as_str(), e.source.as_str())) {
                    // Both lists are sorted by name: walk `prev` along.
                    while j < prev.vms.len() && prev.vms[j].name < e.name {
                        j += 1;
                    }
                    let same = (j..prev.vms.len())
                        .take_while(|&k| prev.vms[k].name == e.name)
                        .find(|&k| prev.vms[k].source == e.source);
                    if let Some(k) = same {
                        debug_assert_eq!(prev.vms[k], *e, "an entry no change names changed");
                        return old.vms[k].clone();
                    }
                }
                vm_record(e, audience)
            })
            .collect();
        let sources = next
            .sources
            .iter()
            .map(|s| {
                let same = (!changed.sources.contains(s.label.as_str()))
                    .then(|| prev.sources.iter().position(|p| p.label == s.label))
                    .flatten();
                match same {
                    Some(k) => {
                        debug_assert_eq!(&prev.sources[k], s, "a source no change names changed");
                        old.sources[k].clone()
                    }
                    None => source_record(s, audience),
                }
            })
            .collect();
        Records { vms, sources }
    }
}

/// One edit of [`Published::patch`], at an index of the entries.
enum Edit {
    Remove(usize),
    Replace(usize, Arc<VmEntry>),
    Insert(usize, Arc<VmEntry>),
}

/// The entries a change batch names: (name, source) of VMs, source labels.
struct Changed<'a> {
    vms: HashSet<(&'a str, &'a str)>,
    sources: HashSet<&'a str>,
}

impl<'a> Changed<'a> {
    fn of(changes: &'a [Change]) -> Self {
        let mut c = Changed {
            vms: HashSet::new(),
            sources: HashSet::new(),
        };
        for change in changes {
            match &change.item {
                ChangeItem::Vm(e) => {
                    c.vms.insert((e.name.as_str(), e.source.as_str()));
                }
                ChangeItem::Source(s) => {
                    c.sources.insert(s.label.as_str());
                }
            }
        }
        c
    }
}

fn vm_record(e: &VmEntry, audience: Audience) -> Arc<[u8]> {
    records::encode_vm(&audience.vm(e), RECORD_BUDGET).into()
}

fn source_record(s: &SourceEntry, audience: Audience) -> Arc<[u8]> {
    records::encode_source(&audience.source(s), RECORD_BUDGET).into()
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
    pub fn new(
        cursor: Cursor,
        vms: impl IntoIterator<Item = impl Into<Arc<VmEntry>>>,
        sources: Vec<SourceEntry>,
        names: Names,
    ) -> Self {
        Published {
            cursor,
            vms: vms.into_iter().map(Into::into).collect(),
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
            Vec::<Arc<VmEntry>>::new(),
            Vec::new(),
            Names::default(),
        )
    }

    /// The encoded records (built on first use, unless
    /// [`Published::encode_after`] built them).
    pub fn records(&self) -> &Records {
        self.records_for(Audience::Host)
    }

    /// The encoded records as `audience` sees them (built on first use,
    /// once per audience, unless [`Published::encode_after`] built them).
    pub fn records_for(&self, audience: Audience) -> &Records {
        self.slot(audience)
            .get_or_init(|| Records::encode(&self.vms, &self.sources, audience))
    }

    fn slot(&self, audience: Audience) -> &OnceLock<Records> {
        match audience {
            Audience::Host => &self.records,
            Audience::Vm => &self.vm_records,
        }
    }

    /// Builds this generation's records from `prev`'s, `changes` being the
    /// batch that leads from `prev` to this one: the entries it names are
    /// encoded, every other entry's record is `prev`'s (an entry that no
    /// change names is the same, byte for byte). The host's records always;
    /// a UI VM's only when `prev` had them (else on first use).
    pub fn encode_after(&self, prev: &Published, changes: &[Change]) {
        let changed = Changed::of(changes);
        for audience in [Audience::Host, Audience::Vm] {
            let records = match prev.slot(audience).get() {
                Some(old) => Records::carried((prev, old), self, &changed, audience),
                None if audience == Audience::Host => {
                    Records::encode(&self.vms, &self.sources, audience)
                }
                None => continue,
            };
            let _ = self.slot(audience).set(records);
        }
    }

    /// Makes this generation the next one in place: `changes` lead to it,
    /// `sources` are its sources (in the same order as this one's: else
    /// `false`, and nothing is changed), `entry` gives each entry a change
    /// names as it is now. Only the entries the changes name are touched
    /// (and their records encoded again); for the one who holds the only
    /// reference to this generation ([`super::Hub::publish_changes`]).
    pub(super) fn patch(
        &mut self,
        cursor: Cursor,
        sources: Vec<SourceEntry>,
        changes: &[Change],
        entry: &dyn Fn(&VmEntry) -> Option<Arc<VmEntry>>,
    ) -> bool {
        let same_order = self.sources.len() == sources.len()
            && self
                .sources
                .iter()
                .zip(&sources)
                .all(|(a, b)| a.label == b.label);
        if !same_order {
            return false;
        }
        let precedence = |label: &SourceLabel| sources.iter().position(|s| &s.label == label);
        // Removals first: an entry added beside them is placed among those
        // that stay.
        let removed = changes.iter().filter(|c| c.kind == ChangeKind::Removed);
        let others = changes.iter().filter(|c| c.kind != ChangeKind::Removed);
        for change in removed.chain(others) {
            let ChangeItem::Vm(e) = &change.item else {
                continue;
            };
            let start = self.vms.partition_point(|v| v.name < e.name);
            let end = start + self.vms[start..].partition_point(|v| v.name == e.name);
            let at = (start..end).find(|&k| self.vms[k].source == e.source);
            let new = match change.kind {
                ChangeKind::Removed => None,
                _ => match entry(e) {
                    Some(new) => Some(new),
                    None => return false,
                },
            };
            let edit = match (at, new) {
                (Some(k), None) => Edit::Remove(k),
                (Some(k), Some(new)) => Edit::Replace(k, new),
                (None, Some(new)) => {
                    let p = precedence(&new.source);
                    let k = start
                        + self.vms[start..end]
                            .iter()
                            .take_while(|v| precedence(&v.source) < p)
                            .count();
                    Edit::Insert(k, new)
                }
                (None, None) => continue,
            };
            self.edit(edit);
        }
        self.cursor = cursor;
        self.sources = sources;
        for audience in [Audience::Host, Audience::Vm] {
            let records: Vec<_> = self
                .sources
                .iter()
                .map(|s| source_record(s, audience))
                .collect();
            if let Some(r) = self.slot_mut(audience).get_mut() {
                r.sources = records;
            }
        }
        true
    }

    /// Makes one edit to the entries, and to the records built.
    fn edit(&mut self, edit: Edit) {
        for audience in [Audience::Host, Audience::Vm] {
            let Some(r) = self.slot_mut(audience).get_mut() else {
                continue;
            };
            match &edit {
                Edit::Remove(k) => {
                    r.vms.remove(*k);
                }
                Edit::Replace(k, e) => r.vms[*k] = vm_record(e, audience),
                Edit::Insert(k, e) => r.vms.insert(*k, vm_record(e, audience)),
            }
        }
        match edit {
            Edit::Remove(k) => {
                self.vms.remove(k);
            }
            Edit::Replace(k, e) => self.vms[k] = e,
            Edit::Insert(k, e) => self.vms.insert(k, e),
        }
    }

    fn slot_mut(&mut self, audience: Audience) -> &mut OnceLock<Records> {
        match audience {
            Audience::Host => &mut self.records,
            Audience::Vm => &mut self.vm_records,
        }
    }

    /// The entry `reference` refers to, by the catalog's one claimant rule
    /// ([`crate::catalog::refer`]), and every other definition of the same
    /// catalog name, or `None` if it refers to nothing.
    pub fn lookup(&self, reference: &str) -> Option<(&VmEntry, Vec<&VmEntry>)> {
        let (pick, others) = self.lookup_at(reference)?;
        let others = others.into_iter().map(|i| &*self.vms[i]).collect();
        Some((&*self.vms[pick], others))
    }

    /// [`Published::lookup`] by index into [`Published::vms`] (and its
    /// records).
    pub fn lookup_at(&self, reference: &str) -> Option<(usize, Vec<usize>)> {
        let has_label = |l: &SourceLabel| self.sources.iter().any(|s| &s.label == l);
        let r = crate::catalog::refer(&self.vms, reference, has_label, self.names)?;
        Some((r.pick, r.others().collect()))
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
