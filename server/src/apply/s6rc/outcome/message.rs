//! The text of the s6-rc applier's outcomes.

use std::fmt;
use std::path::Path;

use super::{Busy, Cause, Forced, How, Recovery, Refusal, Switch};
use crate::apply::outcome::join;
use crate::apply::process::{ToolError, with_meaning};

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
            Cause::Damaged { error, missing } => damaged(f, error.as_ref(), missing),
            Cause::Elsewhere {
                error,
                live,
                compiled,
            } => elsewhere(f, error.as_ref(), live, compiled.as_deref()),
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

/// [`Cause::Damaged`]'s text.
fn damaged(
    f: &mut fmt::Formatter<'_>,
    error: Option<&ToolError>,
    missing: &[String],
) -> fmt::Result {
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

/// [`Cause::Elsewhere`]'s text.
fn elsewhere(
    f: &mut fmt::Formatter<'_>,
    error: Option<&ToolError>,
    live: &Path,
    compiled: Option<&Path>,
) -> fmt::Result {
    let to = compiled.map_or("nothing".into(), |p| p.display().to_string());
    match error {
        Some(e) => write!(f, "{}, and ", with_meaning(e))?,
        None => f.write_str("after the update, ")?,
    }
    write!(f, "{}/compiled points to {to}", live.display())
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
    use super::super::*;
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
