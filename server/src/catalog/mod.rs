//! The catalog: merging scanned sources into one immutable snapshot per
//! generation, and diffs between generations. Pure: no I/O.
//!
//! A rescan goes: [`merge`] the scans against the current [`Catalog`] into a
//! [`Draft`] (or [`merge_changed`]: only the names of the definitions read
//! again, and what depends on them, are resolved again); the rescan's commit builds the views of its active VMs
//! ([`Draft::reject_all`] those whose view failed) and applies them
//! ([`Draft::annotate`] with what the applier reported, in the catalog's
//! own [`Annotations`]); then [`Catalog::successor`] gives the next
//! snapshot and its ordered change batch, or `None` when nothing changed
//! (the generation stays). A dry run computes `successor` and throws it
//! away. The catalog knows nothing of views or appliers: the commit
//! (`rescan::commit`, `rescan::handoff`) is where they meet.
//!
//! How VMs are named ([`Names`]), where their views go ([`Layout`]) and
//! what a name given anywhere refers to ([`refer`], the one claimant rule)
//! are decided here too; every definition gets a stable [`VmIds`] id.

mod claim;
mod cycles;
mod diff;
mod draft;
mod ids;
mod merge;
mod providers;
mod refs;
mod resolve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use vm_catalog_protocol::{
    Cursor, Epoch, Provider, SourceEntry, SourceLabel, VmEntry, VmId, VmName, VmState,
};

use crate::definition::Definition;

pub use claim::{Claims, Referent, qualified, reads_as_other, refer};
pub use draft::Draft;
pub use ids::{ID_LEN, IdEvent, IdKey, VmIds};
pub use merge::{Changed, EntryChange, merge, merge_changed, merge_scans, merge_with};
pub use refs::Refs;
pub use resolve::Annotations;

/// How catalog names are made from directory names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Names {
    /// A VM's name is its directory's name; one name, one VM: the
    /// highest-precedence definition claims it, the others are shadowed.
    #[default]
    Plain,
    /// A VM's name is `<source label>.<directory name>` (`sys.netvm`,
    /// `user.nc`), Spectrum's naming: names do not collide, nothing is
    /// shadowed.
    Qualified,
}

/// Where the view of an active VM is built, under the VM directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Layout {
    /// `<vm-dir>/<name>/config`.
    #[default]
    Plain,
    /// `<vm-dir>/by-id/<id>/config`, and `<vm-dir>/by-name/<name>` linking to
    /// `<vm-dir>/by-id/<id>`: Spectrum's `/run/vm`.
    Spectrum,
}

impl Layout {
    /// The directory that holds the view `config` of the VM `name` with
    /// the id `id`, relative to the VM directory.
    pub fn slot(self, name: &VmName, id: &VmId) -> PathBuf {
        match self {
            Layout::Plain => PathBuf::from(name.as_str()),
            Layout::Spectrum => Path::new(BY_ID).join(id.as_str()),
        }
    }

    /// The view of the VM `name` with the id `id`.
    pub fn view_path(self, vm_dir: &Path, name: &VmName, id: &VmId) -> PathBuf {
        vm_dir.join(self.slot(name, id)).join("config")
    }
}

/// The directory of the by-id views, in the Spectrum layout.
pub const BY_ID: &str = "by-id";
/// The directory of the by-name links, in the Spectrum layout.
pub const BY_NAME: &str = "by-name";

/// How a merge names the VMs and where their views go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOptions {
    /// Plain or qualified names.
    pub names: Names,
    /// Where the views go.
    pub layout: Layout,
    /// The VM directory.
    pub vm_dir: PathBuf,
    /// Whether a VM of an untrusted source may use another untrusted
    /// source's VM as a provider (by default only trusted sources' VMs and
    /// its own source's: else `provider-untrusted`).
    pub cross_source_providers: bool,
}

impl MergeOptions {
    /// Plain names, plain views under `vm_dir`.
    pub fn plain(vm_dir: impl Into<PathBuf>) -> MergeOptions {
        MergeOptions {
            names: Names::Plain,
            layout: Layout::Plain,
            vm_dir: vm_dir.into(),
            cross_source_providers: false,
        }
    }
}

/// One candidate definition: its listed entry, and the scanned definition
/// behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The entry as listed (its `revision` is set by [`Catalog::successor`]);
    /// its `name` is the catalog name, its `providers` the catalog names
    /// its references resolved to. Shared with the published generation.
    pub entry: Arc<VmEntry>,
    /// The definition (files, final paths, fingerprint; its `name` is the
    /// directory's).
    pub definition: Arc<Definition>,
    /// Its source's rank (0 wins).
    pub precedence: u32,
    pub id: VmId,
    /// Its view directory, when it is active.
    pub view: Option<PathBuf>,
}

impl Candidate {
    /// Its providers as the view names them: each resolved provider's
    /// catalog name, and the file that names it.
    pub fn provider_links(&self) -> impl Iterator<Item = (&Provider, &crate::definition::FileRef)> {
        self.entry
            .providers
            .iter()
            .zip(self.definition.providers.iter().map(|p| &p.file))
    }

    /// Whether `other` is this candidate but for its entry's revision.
    pub(crate) fn same_but_revision(&self, other: &Candidate) -> bool {
        (Arc::ptr_eq(&self.definition, &other.definition) || self.definition == other.definition)
            && (self.precedence, &self.id, &self.view) == (other.precedence, &other.id, &other.view)
            && diff::same_entry(&self.entry, &other.entry)
    }
}

/// An immutable snapshot of the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    epoch: Epoch,
    generation: u64,
    /// Sorted by (name, precedence); each shared with the drafts and
    /// generations that did not change it (so a stage can skip what did
    /// not change by `Arc::ptr_eq`).
    candidates: Arc<Vec<Arc<Candidate>>>,
    /// In precedence order.
    sources: Vec<SourceEntry>,
    /// What the applier last reported (services, restarts pending, VMs left
    /// out): carried into the next draft until the applier reports again.
    notes: resolve::Annotations,
    /// How its VMs were named.
    names: Names,
    /// The names rejected from outside the merge (a view that could not be
    /// built): the next incremental merge resolves them again.
    forced: std::collections::BTreeSet<VmName>,
}

impl Catalog {
    /// The empty catalog at generation 0 of `epoch`.
    pub fn empty(epoch: Epoch) -> Catalog {
        Catalog {
            epoch,
            generation: 0,
            candidates: Arc::new(Vec::new()),
            sources: Vec::new(),
            notes: resolve::Annotations::default(),
            names: Names::default(),
            forced: std::collections::BTreeSet::new(),
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
    pub fn candidates(&self) -> &[Arc<Candidate>] {
        &self.candidates
    }

    /// Every candidate's entry, sorted by name then precedence.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = &VmEntry> + '_ {
        self.candidates.iter().map(|c| &*c.entry)
    }

    /// Every candidate's entry as shared with the published generation,
    /// sorted by name then precedence.
    pub fn shared_entries(&self) -> impl ExactSizeIterator<Item = &Arc<VmEntry>> + '_ {
        self.candidates.iter().map(|c| &c.entry)
    }

    /// The active candidates, sorted by name (one per name).
    pub fn active(&self) -> impl Iterator<Item = &Arc<Candidate>> + '_ {
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

    /// How its VMs were named.
    pub fn names(&self) -> Names {
        self.names
    }

    /// Every candidate of `name`, in precedence order.
    pub fn candidates_of(&self, name: &str) -> &[Arc<Candidate>] {
        &self.candidates[claim::range_of(&self.candidates, name)]
    }

    /// The entry `reference` refers to ([`refer`]: the claimant of the
    /// name, or the definition a qualified reference names), and every
    /// other definition of the same catalog name in precedence order.
    pub fn lookup(&self, reference: &str) -> Option<(&VmEntry, Vec<&VmEntry>)> {
        let r = refer(
            &self.candidates,
            reference,
            |l| self.source(l).is_some(),
            self.names,
        )?;
        let others = r.others().map(|i| &*self.candidates[i].entry).collect();
        Some((&*self.candidates[r.pick].entry, others))
    }

    /// The definitions of the active VMs, sorted by name.
    pub fn active_definitions(&self) -> Vec<&Definition> {
        self.active().map(|c| &*c.definition).collect()
    }
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
        assert_eq!(c.active().count(), 0);
    }
}
