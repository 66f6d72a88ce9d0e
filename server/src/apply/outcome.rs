//! The report stage's vocabulary, shared by the appliers: what one apply
//! did, typed. The wire [`ApplyOutcome`](vm_catalog_protocol::ApplyOutcome)
//! — its status and its message (`outcome/message.rs`) — is derived from an
//! [`Outcome`], so that tests and callers look at values, not at text.

mod message;

use std::path::PathBuf;
use std::time::Duration;

use vm_catalog_protocol::VmName;

use super::instance::InstanceName;
use super::plan::Changes;
use super::process::{Holder, ToolError};

pub use message::{Notes, join};

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The applier applies nothing (`none`); `active` VMs are in the
    /// catalog only.
    Disabled {
        /// Active VMs.
        active: usize,
    },
    /// What is live already is what the plan asks for: nothing ran.
    Unchanged,
    /// Refused before anything ran; the previous state stays.
    Invalid(Refusal),
    /// Switched, and the result checked.
    Applied(Switch),
    /// Failed before anything was switched; the previous state stays.
    FailedBeforeSwitch(Cause),
    /// The switch happened but left things broken; repaired at once.
    Repaired {
        /// What broke.
        failure: Cause,
        /// The repairing switch.
        repair: Switch,
    },
    /// The switch happened, left things broken, and was not repaired.
    FailedAfterSwitch {
        /// What broke.
        failure: Cause,
        /// What was done about it.
        recovery: Recovery,
    },
    /// The s6-instance applier's apply: one call per instance, each of
    /// which may fail on its own.
    Instances(InstanceRun),
}

/// What the s6-instance applier did in one apply.
///
/// Its status: `unchanged` when nothing was to be done, `applied` when
/// every call succeeded, `failed-before-switch` when calls failed and none
/// succeeded, `failed-after-switch` when some failed after others changed
/// something. A failed call is tried again at the next apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceRun {
    /// The templated service directory.
    pub service: PathBuf,
    /// Instances the daemon made, afterwards.
    pub instances: usize,
    /// Instances created, deleted, and VMs whose definition changed.
    pub changes: Changes,
    /// Running VMs restarted on their new definition (`--restart-changed`).
    pub restarted: Vec<VmName>,
    /// The calls that failed.
    pub failed: Vec<InstanceFailure>,
    /// Instances the daemon did not make: left alone.
    pub foreign: Vec<InstanceName>,
}

/// A call on one instance that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFailure {
    /// The VM.
    pub vm: VmName,
    /// Its instance.
    pub instance: InstanceName,
    /// What was tried.
    pub action: InstanceAction,
    /// How it failed.
    pub error: ToolError,
}

/// A call on one instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceAction {
    /// `s6-instance-create`.
    Create,
    /// `s6-instance-delete`.
    Delete,
    /// `s6-instance-control -r`.
    Restart,
}

/// Why a set was refused whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// More services than allowed; nothing says which VMs to drop.
    TooManyServices {
        /// Services the set would have.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// A switch that happened, and what it changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Switch {
    /// How: the first one creates the live state.
    pub how: How,
    /// What is live now (for s6-rc, the compiled database).
    pub target: PathBuf,
    /// Services in it.
    pub services: usize,
    /// VMs added, removed and changed.
    pub changes: Changes,
    /// Running VMs that run again with a new process.
    pub restarted: Vec<VmName>,
    /// VMs that had to restart and are not running afterwards.
    pub not_running: Vec<VmName>,
    /// A failure that did not stop the switch (s6-rc-update's exit 1 or 2).
    pub warning: Option<ToolError>,
    /// Why this apply switched although nothing had changed, if so.
    pub forced: Option<Forced>,
}

/// How a switch was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// The live state was created (`s6-rc-init` of this live directory).
    Init {
        /// The live directory.
        live: PathBuf,
    },
    /// The live state was updated (`s6-rc-update`).
    Update,
}

/// Why an apply switched even though the rendered set was live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Forced {
    /// These services had no scan-directory link; the update restores them.
    LinksMissing(Vec<String>),
    /// The last initialization failed after creating the live state.
    InitFailed,
    /// The last failure after a switch was not repaired.
    Unrepaired,
}

/// What went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The set was refused.
    Refused(Refusal),
    /// No s6-svscan reads the scan directory.
    NoScanner {
        /// The scan directory.
        scandir: PathBuf,
    },
    /// The source to compile could not be written.
    WriteSource {
        /// Where.
        path: PathBuf,
        /// Why.
        error: String,
    },
    /// A program failed, before it switched anything.
    Program(ToolError),
    /// A program was still running at its deadline and was killed, before it
    /// switched anything.
    TimedOut {
        /// The program's failure ([`ToolError::TimedOut`]).
        error: ToolError,
        /// The other programs found working on the live state afterwards.
        others: Vec<Holder>,
        /// The pid holding the live lock afterwards, when it is held.
        lock_holder: Option<Option<u32>>,
    },
    /// A scan-directory entry the switch needs belongs to someone else.
    EntryTaken {
        /// The entry.
        entry: PathBuf,
        /// What holds it.
        by: String,
    },
    /// The live state is unusable.
    LiveBroken {
        /// The live directory.
        live: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// Other programs still work on the live state (an update left by a
    /// killed daemon, someone's `s6-rc`).
    Busy(Busy),
    /// The switch happened, then failed, or left services unlinked.
    Damaged {
        /// The failure, if the program reported one.
        error: Option<ToolError>,
        /// Services whose scan-directory link is missing.
        missing: Vec<String>,
    },
    /// The live state points at neither the old nor the new target.
    Elsewhere {
        /// The failure, if the program reported one.
        error: Option<ToolError>,
        /// The live directory.
        live: PathBuf,
        /// What it points at.
        compiled: Option<PathBuf>,
    },
    /// The initialization failed after creating the live state.
    InitLeftLive {
        /// The failure, if the program reported one.
        error: Option<ToolError>,
        /// The live directory.
        live: PathBuf,
        /// What it points at.
        compiled: PathBuf,
    },
}

/// Programs working on the live state, which the applier waited for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    /// The live directory.
    pub live: PathBuf,
    /// How long the applier waited.
    pub waited: Duration,
    /// The programs found working on it.
    pub programs: Vec<Holder>,
    /// The pid holding the live lock, when the lock is held.
    pub lock_holder: Option<Option<u32>>,
}

/// What was done after a switch that was not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing yet: the next apply switches from what is live now.
    NextApply,
    /// The repair failed; the previous target is live again, all its
    /// services supervised.
    RolledBack {
        /// Why the repair failed.
        repair: Cause,
        /// What is live again.
        to: PathBuf,
    },
    /// The repair and the rollback failed: a person must act.
    Unrecovered {
        /// Why the repair failed.
        repair: Cause,
        /// Why the rollback failed.
        rollback: Cause,
        /// The live directory.
        live: PathBuf,
        /// Its scan directory.
        scandir: PathBuf,
    },
}
