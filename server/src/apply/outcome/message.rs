//! The wire outcome's status and message, from the typed [`Outcome`].

use std::collections::BTreeSet;
use std::fmt::{self, Write};

use vm_catalog_protocol::{ApplyStatus, VmName};

use super::{
    Busy, Cause, Forced, How, InstanceAction, InstanceFailure, InstanceRun, Outcome, Recovery,
    Refusal, Switch,
};
use crate::apply::LeftOut;
use crate::apply::plan::Changes;
use crate::apply::process::{ToolError, exit_meaning};

impl Outcome {
    /// The wire status.
    pub fn status(&self) -> ApplyStatus {
        match self {
            Outcome::Disabled { .. } => ApplyStatus::Disabled,
            Outcome::Unchanged => ApplyStatus::Unchanged,
            Outcome::Invalid(_) => ApplyStatus::Invalid,
            Outcome::Applied(_) => ApplyStatus::Applied,
            Outcome::FailedBeforeSwitch(_) => ApplyStatus::FailedBeforeSwitch,
            Outcome::Repaired { .. } => ApplyStatus::Repaired,
            Outcome::FailedAfterSwitch { .. } => ApplyStatus::FailedAfterSwitch,
            Outcome::Instances(r) => r.status(),
        }
    }

    /// The message of the wire outcome: this outcome, then `notes`.
    pub fn message(&self, notes: &Notes<'_>) -> String {
        let mut m = String::new();
        let live_note = |m: &mut String| match &notes.live {
            Some(db) => {
                let _ = write!(m, "; {} stays live", db.display());
            }
            None => m.push_str("; nothing is live"),
        };
        match self {
            Outcome::Disabled { active } => {
                let _ = write!(
                    m,
                    "applier none: {active} active vms are in the catalog only, no services"
                );
            }
            Outcome::Unchanged => {
                let _ = write!(
                    m,
                    "the rendered set equals the live one ({} services): nothing to do",
                    notes.services
                );
            }
            Outcome::Invalid(r) => {
                let _ = write!(
                    m,
                    "{r} (max_services; s6-svscan's -c must allow them too): nothing was \
                     compiled"
                );
                live_note(&mut m);
            }
            Outcome::Applied(s) => {
                let _ = write!(m, "{s}");
            }
            Outcome::FailedBeforeSwitch(c) => {
                let _ = write!(m, "{c}");
                live_note(&mut m);
            }
            Outcome::Repaired { failure, repair } => {
                let _ = write!(m, "{failure}; repaired: {repair}");
            }
            Outcome::FailedAfterSwitch { failure, recovery } => {
                let _ = write!(m, "{failure}{recovery}");
            }
            Outcome::Instances(r) => {
                let _ = write!(m, "{r}");
            }
        }
        if !notes.pending.is_empty() {
            let _ = write!(m, "; restart pending: {}", join(notes.pending.iter()));
        }
        for (i, l) in notes.left_out.iter().enumerate() {
            let sep = if i == 0 { "; left out: " } else { ", " };
            let _ = write!(m, "{sep}{} ({})", l.vm, l.message);
        }
        if let Some(state) = notes.state {
            let _ = write!(m, "; state: {state}");
        }
        m
    }
}

/// What the message says besides the outcome.
#[derive(Debug, Clone, Copy)]
pub struct Notes<'a> {
    /// What is live after the apply.
    pub live: Option<&'a std::path::Path>,
    /// Services in the rendered set.
    pub services: usize,
    /// Restart-pending VMs.
    pub pending: &'a BTreeSet<VmName>,
    /// VMs left out.
    pub left_out: &'a [LeftOut],
    /// What was wrong with the applier's state file when it was read, and
    /// what was recovered (said once, in the first report after it).
    pub state: Option<&'a str>,
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

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooManyServices { count, max } => {
                write!(f, "{count} vm services exceed the maximum of {max}")
            }
        }
    }
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.how {
            How::Init { live } => write!(
                f,
                "initialized {} with {} services ({})",
                live.display(),
                self.services,
                self.changes
            )?,
            How::Update => write!(
                f,
                "switched to {} ({} services, {})",
                self.target.display(),
                self.services,
                self.changes
            )?,
        }
        if !self.restarted.is_empty() {
            write!(f, "; restarted {}", join(self.restarted.iter()))?;
        }
        if !self.not_running.is_empty() {
            write!(
                f,
                "; not running after the update: {}",
                join(self.not_running.iter())
            )?;
        }
        if let Some(w) = &self.warning {
            write!(f, "; {}", with_meaning(w))?;
        }
        if let Some(why) = &self.forced {
            write!(f, "; {why}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Forced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Forced::LinksMissing(names) => write!(
                f,
                "the scan directory links of {} services were missing ({}); the update restored them",
                names.len(),
                abbreviate(names)
            ),
            Forced::InitFailed => f.write_str("the last s6-rc-init failed"),
            Forced::Unrepaired => f.write_str("the last update could not be repaired"),
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Refused(r) => write!(f, "{r}"),
            Cause::NoScanner { scandir } => {
                write!(f, "no s6-svscan is running on {}", scandir.display())
            }
            Cause::WriteSource { path, error } => write!(
                f,
                "cannot write the service source {}: {error}",
                path.display()
            ),
            Cause::Program(e) => f.write_str(&with_meaning(e)),
            Cause::TimedOut {
                error,
                others,
                lock_holder,
            } => {
                write!(f, "{error}")?;
                for (i, h) in others.iter().enumerate() {
                    let sep = if i == 0 {
                        "; working on the live directory: "
                    } else {
                        ", "
                    };
                    write!(f, "{sep}pid {} ({})", h.pid, h.command)?;
                }
                lock_note(f, *lock_holder)
            }
            Cause::EntryTaken { entry, by } => write!(
                f,
                "scan directory entry {} is taken by {by}: s6-rc-init would fail",
                entry.display()
            ),
            Cause::LiveBroken { live, why } => {
                write!(f, "live directory {} is unusable: {why}", live.display())
            }
            Cause::Busy(b) => write!(f, "{b}"),
            Cause::Damaged { error, missing } => {
                match error {
                    Some(e) => write!(f, "{} after the switch", with_meaning(e))?,
                    None => f.write_str("the switch")?,
                }
                match (error, missing.is_empty()) {
                    (_, true) => Ok(()),
                    (Some(_), false) => write!(
                        f,
                        ", {} scan directory links missing ({})",
                        missing.len(),
                        abbreviate(missing)
                    ),
                    (None, false) => write!(
                        f,
                        " left {} scan directory links missing ({})",
                        missing.len(),
                        abbreviate(missing)
                    ),
                }
            }
            Cause::Elsewhere {
                error,
                live,
                compiled,
            } => {
                let to = compiled
                    .as_ref()
                    .map_or("nothing".into(), |p| p.display().to_string());
                match error {
                    Some(e) => write!(f, "{}, and ", with_meaning(e))?,
                    None => f.write_str("after the update, ")?,
                }
                write!(f, "{}/compiled points to {to}", live.display())
            }
            Cause::InitLeftLive {
                error,
                live,
                compiled,
            } => {
                write!(
                    f,
                    "s6-rc-init failed after creating {} (compiled -> {})",
                    live.display(),
                    compiled.display()
                )?;
                if let Some(e) = error {
                    write!(f, ": {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "other programs still work on the live directory {}",
            self.live.display()
        )?;
        let waited = self.waited.as_secs();
        if waited > 0 {
            write!(f, " after {waited} s")?;
        }
        for (i, h) in self.programs.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}pid {} ({})", h.pid, h.command)?;
        }
        lock_note(f, self.lock_holder)
    }
}

fn lock_note(f: &mut fmt::Formatter<'_>, holder: Option<Option<u32>>) -> fmt::Result {
    match holder {
        Some(Some(pid)) => write!(f, "; pid {pid} holds the live lock"),
        Some(None) => f.write_str("; the live lock is held"),
        None => Ok(()),
    }
}

impl fmt::Display for Recovery {
    /// Appended to the failure: starts with "; ".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::NextApply => f.write_str("; the next apply updates it"),
            Recovery::RolledBack { repair, to } => write!(
                f,
                "; repair failed: {repair}; rolled back to the previous database {}, whose \
                 services are supervised again",
                to.display()
            ),
            Recovery::Unrecovered {
                repair,
                rollback,
                live,
                scandir,
            } => write!(
                f,
                "; repair failed: {repair}; rollback failed: {rollback}. The scan directory \
                 links of {live} may be missing, and the next prune of {scandir} (any \
                 s6-rc-update on it) stops every VM: run s6-rc-update -l {live} with a valid \
                 database now",
                live = live.display(),
                scandir = scandir.display()
            ),
        }
    }
}

/// `e (what its exit code means)`, when that is known.
fn with_meaning(e: &ToolError) -> String {
    match e.code().and_then(|c| exit_meaning(e.program(), c)) {
        Some(meaning) => format!("{e} ({meaning})"),
        None => e.to_string(),
    }
}

/// Names joined with ", ".
pub fn join<'a, T: fmt::Display + 'a>(names: impl Iterator<Item = &'a T>) -> String {
    names.map(T::to_string).collect::<Vec<_>>().join(", ")
}

/// At most five names, then how many more.
fn abbreviate(names: &[String]) -> String {
    let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    match names.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::plan::Changes;
    use vm_catalog_protocol::DiagCode;

    fn n(s: &str) -> VmName {
        s.parse().unwrap()
    }

    #[test]
    fn messages_are_built_from_the_outcome_and_its_notes() {
        let pending = [n("a")].into();
        let left_out = [
            LeftOut {
                vm: n("b"),
                code: DiagCode::ServiceConflict,
                message: "x".into(),
            },
            LeftOut {
                vm: n("c"),
                code: DiagCode::ProviderUnavailable,
                message: "y".into(),
            },
        ];
        let db = std::path::Path::new("/s/db-1-0");
        let notes = Notes {
            live: Some(db),
            services: 2,
            pending: &pending,
            left_out: &left_out,
            state: None,
        };
        let failed = Outcome::FailedBeforeSwitch(Cause::Program(ToolError::Exit {
            program: "s6-rc-update",
            code: 9,
            stderr: String::new(),
        }));
        assert_eq!(failed.status(), ApplyStatus::FailedBeforeSwitch);
        assert_eq!(
            failed.message(&notes),
            "s6-rc-update exited with code 9 (stopping services failed, the database was not \
             switched); /s/db-1-0 stays live; restart pending: a; left out: b (x), c (y)"
        );
        let none = Notes {
            live: None,
            services: 0,
            pending: &BTreeSet::new(),
            left_out: &[],
            state: None,
        };
        let switch = Switch {
            how: How::Update,
            target: db.to_owned(),
            services: 3,
            changes: Changes {
                added: 1,
                removed: 0,
                changed: 2,
            },
            restarted: vec![n("a")],
            not_running: vec![],
            warning: None,
            forced: Some(Forced::LinksMissing(vec!["a".into()])),
        };
        assert_eq!(
            Outcome::Applied(switch).message(&none),
            "switched to /s/db-1-0 (3 services, +1 -0 ~2); restarted a; the scan directory \
             links of 1 services were missing (a); the update restored them"
        );
        let damaged = Cause::Damaged {
            error: None,
            missing: (0..7).map(|i| format!("s{i}")).collect(),
        };
        assert_eq!(
            damaged.to_string(),
            "the switch left 7 scan directory links missing (s0, s1, s2, s3, s4 and 2 more)"
        );
    }
}
