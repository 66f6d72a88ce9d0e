//! Applying the catalog: an [`Applier`] makes the set of active VMs real.
//!
//! The rescan worker calls [`Applier::apply`] once per rescan that reaches
//! the apply stage, always from the same thread: every s6-rc call is
//! serialized there.
//!
//! Three appliers exist: [`none::NoneApplier`] (catalog only),
//! [`s6rc::S6rcApplier`] (one s6-rc database of VM services, swapped
//! atomically; see `docs/s6-rc.md`) and [`instance::InstanceApplier`] (each
//! VM an instance of one templated s6 service; see `docs/s6-instance.md`).
//!
//! An apply runs in stages, each returning a value: plan (pure: what is
//! added, removed, changed, kept: [`plan`]) → switch (through the applier's
//! tools) → verify, or repair → report (a typed [`outcome::Outcome`], from
//! which the wire outcome and its message are derived). The plan and report
//! types are the appliers' common vocabulary, with the restart-pending
//! bookkeeping ([`restart`]), the log line ([`report`]), the state files
//! ([`state_file`]) and what s6's supervision files say ([`supervise`]); [`process`] runs their programs
//! with deadlines.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use vm_catalog_protocol::{ApplyOutcome, DiagCode, VmId, VmName};

pub mod fingerprint;
pub mod instance;
pub mod none;
pub mod outcome;
pub mod plan;
pub mod process;
pub mod report;
pub mod restart;
pub mod s6rc;
pub mod state_file;
pub mod supervise;

pub use outcome::Outcome;

/// One active VM, as the applier needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveVm {
    /// Its name (also its service name in the VM database).
    pub name: VmName,
    /// Its view directory (`<vm-dir>/<name>/config`, or
    /// `<vm-dir>/by-id/<id>/config`), which the VMM reads.
    pub view: PathBuf,
    /// The VMs that provide its network: service dependencies.
    pub providers: Vec<VmName>,
    /// Changes whenever anything the VMM would see changes.
    pub fingerprint: u64,
    /// Its definition's id: unique, stable across rescans and restarts, valid
    /// as a file name and an s6 instance name.
    pub id: VmId,
}

/// What to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyRequest {
    /// The catalog generation being applied.
    pub generation: u64,
    /// Every active VM, sorted by name; providers are all in the set.
    pub vms: Vec<ActiveVm>,
}

/// What the applier did, and what is live afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The outcome, as reported to clients (derived from `result`).
    pub outcome: ApplyOutcome,
    /// The outcome, typed.
    pub result: Outcome,
    /// The service of every VM in the live state.
    pub services: BTreeMap<VmName, Service>,
    /// Running VMs whose definition changed since they started.
    pub restart_pending: BTreeSet<VmName>,
    /// Active VMs that were left out of the database, and why. The daemon
    /// shows each as an error diagnostic on that VM's entry (its `service`
    /// stays `None`); the rest of the set is applied without them.
    pub left_out: Vec<LeftOut>,
}

/// The service a VM runs as in the live state.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// A longrun of the s6-rc VM database, by its service name (the VM's
    /// name).
    S6rc(VmName),
    /// An instance of the templated service, by its instance name.
    Instance(instance::InstanceName),
}

impl fmt::Display for Service {
    /// The name clients see in a VM entry's `service` field.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Service::S6rc(name) => f.write_str(name.as_str()),
            Service::Instance(name) => f.write_str(name.as_str()),
        }
    }
}

/// An active VM that cannot be a service, with a diagnostic for its entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeftOut {
    /// The VM.
    pub vm: VmName,
    /// The diagnostic code: `name-too-long`, `service-conflict` (its scan
    /// directory entry is taken), `invalid-path` (its view path is unsafe),
    /// `missing-provider`, `provider-unavailable` (a provider is left out)
    /// or `provider-cycle`.
    pub code: DiagCode,
    /// What is wrong, for the diagnostic's message.
    pub message: String,
}

/// Makes the catalog's active set real.
pub trait Applier: Send {
    /// `s6-rc`, `s6-instance` or `none`.
    fn name(&self) -> &'static str;

    /// Brings the live state in line with `request`. Never panics on a
    /// failure: the failure is the report's outcome, and the previous state
    /// stays in place.
    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport;

    /// Work put off until the callers have their answer: removing what
    /// earlier applies left behind (the s6-rc applier's old databases). The
    /// rescan worker calls it after every rescan, from the same thread as
    /// [`Applier::apply`].
    fn tidy(&mut self) {}
}
