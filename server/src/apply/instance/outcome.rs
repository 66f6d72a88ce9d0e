//! The s6-instance applier's account of one apply, typed: the status and
//! the first part of the message are derived from it.

use std::fmt::{self, Write};
use std::path::PathBuf;

use vm_catalog_protocol::{ApplyStatus, VmName};

use super::name::InstanceName;
use super::tools::ListError;
use crate::apply::outcome::{Detail, Notes, join};
use crate::apply::plan::Changes;
use crate::apply::process::ToolError;

/// What one apply of the s6-instance applier did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    /// No s6-svscan runs on the templated service's `instance/`: nothing
    /// ran.
    NoScanner {
        /// The scan directory.
        scandir: PathBuf,
    },
    /// The instances could not be listed: nothing ran.
    ListFailed(ListError),
    /// The calls of this apply, each of which may fail on its own.
    Ran(InstanceRun),
}

impl Detail for InstanceOutcome {
    fn status(&self) -> ApplyStatus {
        match self {
            InstanceOutcome::NoScanner { .. } | InstanceOutcome::ListFailed(_) => {
                ApplyStatus::FailedBeforeSwitch
            }
            InstanceOutcome::Ran(r) => r.status(),
        }
    }

    fn summary(&self, notes: &Notes<'_>) -> String {
        let mut m = String::new();
        let _ = match self {
            InstanceOutcome::NoScanner { scandir } => write!(
                m,
                "no s6-svscan is running on {}{}",
                scandir.display(),
                notes.live_note()
            ),
            InstanceOutcome::ListFailed(e) => {
                write!(m, "{e}{}", notes.live_note())
            }
            InstanceOutcome::Ran(r) => write!(m, "{r}"),
        };
        m
    }
}

/// The calls of one apply of the s6-instance applier.
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

impl InstanceRun {
    /// The wire status (see [`InstanceRun`]).
    pub fn status(&self) -> ApplyStatus {
        let did = self.changes != Changes::default() || !self.restarted.is_empty();
        match (self.failed.is_empty(), did) {
            (true, false) => ApplyStatus::Unchanged,
            (true, true) => ApplyStatus::Applied,
            (false, false) => ApplyStatus::FailedBeforeSwitch,
            (false, true) => ApplyStatus::FailedAfterSwitch,
        }
    }
}

impl fmt::Display for InstanceRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} s6 instances of {} ({})",
            self.instances,
            self.service.display(),
            self.changes
        )?;
        if !self.restarted.is_empty() {
            write!(f, "; restarted {}", join(self.restarted.iter()))?;
        }
        for (i, x) in self.failed.iter().enumerate() {
            let sep = if i == 0 { "; failed: " } else { ", " };
            write!(f, "{sep}{x}")?;
        }
        if !self.failed.is_empty() {
            f.write_str("; tried again at the next apply")?;
        }
        if !self.foreign.is_empty() {
            write!(
                f,
                "; not made by vm-catalogd, left alone: {}",
                join(self.foreign.iter())
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for InstanceFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.action {
            InstanceAction::Create => "creating",
            InstanceAction::Delete => "deleting",
            InstanceAction::Restart => "restarting",
        };
        write!(
            f,
            "{what} instance {} of {} ({})",
            self.instance, self.vm, self.error
        )
    }
}
