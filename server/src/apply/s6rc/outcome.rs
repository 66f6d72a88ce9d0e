//! The s6-rc applier's account of one apply, typed: the status and the
//! first part of the message (`vm-catalog status`) are derived from it
//! (the text of each part: `message.rs`).

mod message;

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use vm_catalog_protocol::{ApplyStatus, VmName};

use crate::apply::outcome::{Detail, Notes};
use crate::apply::plan::Changes;
use crate::apply::process::{Holder, ToolError};

/// What one apply of the s6-rc applier did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum S6rcOutcome {
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
}

impl Detail for S6rcOutcome {
    fn status(&self) -> ApplyStatus {
        match self {
            S6rcOutcome::Unchanged => ApplyStatus::Unchanged,
            S6rcOutcome::Invalid(_) => ApplyStatus::Invalid,
            S6rcOutcome::Applied(_) => ApplyStatus::Applied,
            S6rcOutcome::FailedBeforeSwitch(_) => ApplyStatus::FailedBeforeSwitch,
            S6rcOutcome::Repaired { .. } => ApplyStatus::Repaired,
            S6rcOutcome::FailedAfterSwitch { .. } => ApplyStatus::FailedAfterSwitch,
        }
    }

    fn summary(&self, notes: &Notes<'_>) -> String {
        let mut m = String::new();
        let _ = match self {
            S6rcOutcome::Unchanged => write!(
                m,
                "the rendered set equals the live one ({} services): nothing to do",
                notes.services
            ),
            S6rcOutcome::Invalid(r) => write!(
                m,
                "{r} (max_services; s6-svscan's -c must allow them too): nothing was \
                 compiled{}",
                notes.live_note()
            ),
            S6rcOutcome::Applied(s) => write!(m, "{s}"),
            S6rcOutcome::FailedBeforeSwitch(c) => write!(m, "{c}{}", notes.live_note()),
            S6rcOutcome::Repaired { failure, repair } => {
                write!(m, "{failure}; repaired: {repair}")
            }
            S6rcOutcome::FailedAfterSwitch { failure, recovery } => {
                write!(m, "{failure}{recovery}")
            }
        };
        m
    }
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
