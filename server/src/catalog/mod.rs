//! The catalog: merging scanned sources into one immutable snapshot per
//! generation, and diffs between generations. Pure: no I/O.
//!
//! A rescan goes: [`merge`] the scans against the current [`Catalog`] into a
//! [`Draft`]; build the views ([`crate::views`]); apply
//! ([`Draft::apply_request`], then [`Draft::annotate`] with the report);
//! then [`Catalog::successor`] gives the next snapshot and its ordered
//! change batch, or `None` when nothing changed (the generation stays). A
//! dry run computes `successor` and throws it away.

mod cycles;
mod diff;
mod draft;
mod merge;
mod resolve;

use std::path::PathBuf;
use std::sync::Arc;

use vm_catalog_protocol::{Cursor, Epoch, SourceEntry, SourceLabel, VmEntry, VmState};

use crate::apply::{ActiveVm, ApplyRequest};
use crate::definition::Definition;

pub use draft::Draft;
pub use merge::merge;
pub use resolve::view_path;

/// One candidate definition: its listed entry, and the scanned definition
/// behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The entry as listed (its `revision` is set by [`Catalog::successor`]).
    pub entry: VmEntry,
    /// The definition (files, final paths, fingerprint).
    pub definition: Arc<Definition>,
    /// Its source's rank (0 wins).
    pub precedence: u32,
    /// Its view directory, when it is active.
    pub view: Option<PathBuf>,
}

/// An immutable snapshot of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    epoch: Epoch,
    generation: u64,
    /// Sorted by (name, precedence).
    candidates: Vec<Candidate>,
    /// In precedence order.
    sources: Vec<SourceEntry>,
    /// What the applier last reported (services, restarts pending, VMs left
    /// out): carried into the next draft until the applier reports again.
    notes: resolve::Annotations,
}

impl Catalog {
    /// The empty catalog at generation 0 of `epoch`.
    pub fn empty(epoch: Epoch) -> Catalog {
        Catalog {
            epoch,
            generation: 0,
            candidates: Vec::new(),
            sources: Vec::new(),
            notes: resolve::Annotations::default(),
        }
    }

    /// Its position: (epoch, generation).
    pub fn cursor(&self) -> Cursor {
        Cursor {
            epoch: self.epoch,
            generation: self.generation,
        }
    }

    /// Its generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Every candidate, sorted by name then precedence.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// Every candidate's entry, sorted by name then precedence.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &VmEntry> + '_ {
        self.candidates.iter().map(|c| &c.entry)
    }

    /// The active candidates, sorted by name (one per name).
    pub fn active(&self) -> impl Iterator<Item = &Candidate> + '_ {
        self.candidates
            .iter()
            .filter(|c| c.entry.state == VmState::Active)
    }

    /// The sources, in precedence order.
    pub fn sources(&self) -> &[SourceEntry] {
        &self.sources
    }

    /// The source with this label.
    pub fn source(&self, label: &SourceLabel) -> Option<&SourceEntry> {
        self.sources.iter().find(|s| &s.label == label)
    }

    /// Every candidate of `name`, in precedence order.
    pub fn candidates_of(&self, name: &str) -> &[Candidate] {
        let start = self
            .candidates
            .partition_point(|c| c.entry.name.as_str() < name);
        let end =
            start + self.candidates[start..].partition_point(|c| c.entry.name.as_str() == name);
        &self.candidates[start..end]
    }

    /// The entry that claims `name` (active or rejected; if every definition
    /// of it is unavailable, the first of those), and every other definition
    /// of the name in precedence order.
    pub fn lookup(&self, name: &str) -> Option<(&VmEntry, Vec<&VmEntry>)> {
        let all = self.candidates_of(name);
        let claimant = all
            .iter()
            .position(|c| matches!(c.entry.state, VmState::Active | VmState::Rejected))
            .or_else(|| (!all.is_empty()).then_some(0))?;
        let others = all
            .iter()
            .enumerate()
            .filter(|&(i, _)| i != claimant)
            .map(|(_, c)| &c.entry)
            .collect();
        Some((&all[claimant].entry, others))
    }

    /// The definitions of the active VMs, sorted by name: what the views show.
    pub fn active_definitions(&self) -> Vec<&Definition> {
        self.active().map(|c| &*c.definition).collect()
    }

    /// What the applier needs to make this generation's active set live
    /// (to retry a failed apply without a rescan).
    pub fn apply_request(&self) -> ApplyRequest {
        ApplyRequest {
            generation: self.generation,
            vms: active_vms(&self.candidates),
        }
    }
}

/// The active set as the applier sees it, sorted by name.
pub(crate) fn active_vms(candidates: &[Candidate]) -> Vec<ActiveVm> {
    candidates
        .iter()
        .filter(|c| c.entry.state == VmState::Active)
        .map(|c| {
            let mut providers: Vec<_> = c.entry.providers.iter().map(|p| p.name.clone()).collect();
            providers.sort();
            providers.dedup();
            ActiveVm {
                name: c.entry.name.clone(),
                view: c.view.clone().unwrap_or_default(),
                providers,
                fingerprint: c.definition.fingerprint,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send_sync<T: Send + Sync>() {}

    #[test]
    fn snapshots_and_drafts_cross_threads() {
        // The rescan worker builds drafts; readers share `Arc<Catalog>`.
        send_sync::<Catalog>();
        send_sync::<Draft>();
        send_sync::<crate::definition::SourceScan>();
    }

    #[test]
    fn empty_catalog_is_generation_zero() {
        let c = Catalog::empty(Epoch(9));
        assert_eq!(
            c.cursor(),
            Cursor {
                epoch: Epoch(9),
                generation: 0
            }
        );
        assert_eq!(c.entries().len(), 0);
        assert!(c.lookup("x").is_none());
        assert!(c.apply_request().vms.is_empty());
    }
}
