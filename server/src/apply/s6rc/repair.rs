//! The repair stage: a failure after the switch, repaired at once.
//!
//! s6-rc-update can fail *after* `LIVE` was switched, typically with exit 111
//! and every scan-directory link of the live set removed: the running VMs
//! survive only until the next prune of the scan directory (s6rc.md §2.6).
//! The repair is first an update to the same request rendered again — with
//! every name checked against the scan directory, so a name someone else
//! took in the meantime is left out — and if that fails too, an update back
//! to the previous database, which had all its links a moment ago. Neither
//! restarts a running VM. Supervisors left in deleted live directories by
//! the failed update are stopped afterwards.

use std::time::Instant;

use super::cleanup;
use super::commit::{
    build, commit, commit_with_probes, delta_between, record_of, save_and_discard,
};
use super::outcome::{Cause, Forced, How, Recovery, S6rcOutcome, Switch};
use super::plan::refusal;
use super::state::DbRecord;
use super::tools::S6rc;
use super::update::{Switched, run_update};
use super::{Memory, Shown, Step, System, Wanted, adopt};
use crate::apply::restart::{self, Probe};

/// A switch that broke things: from what, and how.
pub(super) struct Damage<'a> {
    /// The database that was live before the switch.
    pub old: &'a DbRecord,
    /// The running VMs whose definition the switch changes.
    pub probes: &'a [Probe],
    /// What broke.
    pub failure: Cause,
    /// What the report shows if the repair fails.
    pub shown: Shown,
}

/// Repairs `damage`: update again to a freshly validated tree of `wanted`;
/// failing that, roll back to the old database.
pub(super) fn repair<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    wanted: &Wanted<'_>,
    damage: Damage<'_>,
) -> Step {
    let t = Instant::now();
    tracing::error!("{}; repairing", damage.failure);
    let step = match again(sys, memory, wanted, &damage) {
        Ok(step) => step,
        Err(repair) => rollback(sys, memory, damage, repair),
    };
    if sys.live.compiled().is_some() {
        cleanup::sweep_supervisors(&mut sys.tools, &sys.live);
    }
    memory.timings.repair = t.elapsed();
    step
}

/// The same request again, with every name checked against the scan
/// directory (the failed update removed this live set's links: whatever
/// holds one of its names now is someone else's).
fn again<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    wanted: &Wanted<'_>,
    damage: &Damage<'_>,
) -> Result<Step, Cause> {
    let live = &sys.live;
    let fresh = wanted
        .renderer
        .render(wanted.vms, &mut |n| live.conflict(n))
        .map_err(|e| Cause::Refused(refusal(e)))?;
    let slot = build(sys, &mut memory.timings, wanted.generation, &fresh.tree)?;
    let record = record_of(&slot, &fresh.tree);
    memory.state.next = Some(record.clone());
    memory.save(&sys.store);
    let current = sys.live.compiled().unwrap_or_default();
    match run_update(sys, &record, None, &current) {
        Switched::Clean(warning) => {
            let changes = delta_between(damage.old, &record).changes();
            let (restarted, not_running) =
                commit_with_probes(sys, memory, record.clone(), damage.probes);
            let repair = Switch {
                how: How::Update,
                target: record.database,
                services: fresh.tree.services.len(),
                changes,
                restarted,
                not_running,
                warning,
                forced: None,
            };
            let shown = Shown {
                services: fresh.tree.services.len(),
                left_out: fresh.left_out,
            };
            let failure = damage.failure.clone();
            Ok((S6rcOutcome::Repaired { failure, repair }, shown))
        }
        other => Err(other.cause().unwrap_or_else(|| damage.failure.clone())),
    }
}

/// Back to the database that was live, links and all, before.
fn rollback<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    damage: Damage<'_>,
    repair: Cause,
) -> Step {
    let Damage {
        old,
        failure,
        shown,
        ..
    } = damage;
    let current = sys.live.compiled().unwrap_or_default();
    let recovery = match run_update(sys, old, None, &current) {
        Switched::Clean(_) => {
            let running = restart::refresh(&memory.state.running, &mut sys.pid_of());
            commit(sys, memory, old.clone(), running);
            Recovery::RolledBack {
                repair,
                to: old.database.clone(),
            }
        }
        other => {
            adopt::adopt_current(sys, memory);
            memory.force = Some(Forced::Unrepaired);
            save_and_discard(sys, memory);
            Recovery::Unrecovered {
                repair,
                rollback: other.cause().unwrap_or_else(|| failure.clone()),
                live: sys.live.path().to_owned(),
                scandir: sys.live.scandir().to_owned(),
            }
        }
    };
    (S6rcOutcome::FailedAfterSwitch { failure, recovery }, shown)
}
