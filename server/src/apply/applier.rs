//! The [`Applier`] trait and what goes in and out of it: the request (the
//! active set, [`ActiveVm`]s) and the report (the outcome, each VM's
//! [`ServiceName`], the VMs [`LeftOut`]). Every applier implements it and
//! the rescan's commit calls it; it imports no applier, so that each
//! applier's folder depends on it and not on the table in `mod.rs` that
//! opens them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use vm_catalog_protocol::{ApplyOutcome, DiagCode, VmId, VmName};

use super::outcome::ApplyResult;

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
    /// The outcome, as the applier tells it.
    pub result: ApplyResult,
    /// The service of every VM in the live state.
    pub services: BTreeMap<VmName, ServiceName>,
    /// Running VMs whose definition changed since they started.
    pub restart_pending: BTreeSet<VmName>,
    /// Active VMs that were left out of the database, and why. The daemon
    /// shows each as an error diagnostic on that VM's entry (its `service`
    /// stays `None`); the rest of the set is applied without them.
    pub left_out: Vec<LeftOut>,
}

/// The name of the service a VM runs as in the live state (an s6-rc
/// longrun, an s6 instance), as clients see it in a VM entry's `service`
/// field: 1–255 bytes, no `/`, no control character, not starting with `.`
/// (a name s6 and the file system accept).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceName(String);

/// Why a string cannot be a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "a service name is 1 to 255 bytes, without '/' or control characters, not starting with '.'"
)]
pub struct BadServiceName;

impl ServiceName {
    /// Checks `s`.
    pub fn new(s: &str) -> Result<ServiceName, BadServiceName> {
        let ok = !s.is_empty()
            && s.len() <= 255
            && !s.starts_with('.')
            && !s.chars().any(|c| c == '/' || c.is_control());
        ok.then(|| ServiceName(s.to_owned())).ok_or(BadServiceName)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for ServiceName {
    type Err = BadServiceName;

    fn from_str(s: &str) -> Result<ServiceName, BadServiceName> {
        ServiceName::new(s)
    }
}

impl From<VmName> for ServiceName {
    /// A VM name is always a valid service name.
    fn from(name: VmName) -> ServiceName {
        ServiceName(name.as_str().to_owned())
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
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
