//! The s6-rc applier's account of one apply, typed: the status and the
//! first part of the message (`vm-catalog status`) are derived from it.

use std::fmt::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

use vm_catalog_protocol::{ApplyStatus, VmName};

use crate::apply::outcome::{Detail, Notes, join};
use crate::apply::plan::Changes;
use crate::apply::process::{Holder, ToolError, with_meaning};

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
    use crate::apply::LeftOut;
    use crate::apply::outcome::ApplyResult;
    use std::collections::BTreeSet;
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
        let failed = ApplyResult::new(S6rcOutcome::FailedBeforeSwitch(Cause::Program(
            ToolError::Exit {
                program: "s6-rc-update",
                code: 9,
                stderr: String::new(),
            },
        )));
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
            ApplyResult::new(S6rcOutcome::Applied(switch)).message(&none),
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
