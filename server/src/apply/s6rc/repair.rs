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
use super::outcome::{Cause, Forced, How, Recovery, S6rcOutcome, Switch};
use super::plan::refusal;
use super::state::DbRecord;
use super::switch::{Switched, build, cleanup as save_and_collect, commit, commit_with_probes};
use super::switch::{plan_between, record_of, run_update};
use super::tools::S6rc;
use super::{Ctx, Shown, Step};
use crate::apply::restart::{self, Probe};

/// Repairs `failure` after the switch from `old`: update again to a freshly
/// validated tree; failing that, roll back to `old`.
pub(super) fn repair<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    generation: u64,
    old: &DbRecord,
    probes: &[Probe],
    failure: Cause,
    shown: Shown,
) -> Step {
    let t = Instant::now();
    tracing::error!("{failure}; repairing");
    let step = again(ctx, generation, old, probes, &failure);
    let step = match step {
        Ok(step) => step,
        Err(repair) => rollback(ctx, old, failure, repair, shown),
    };
    if ctx.host.live.compiled().is_some() {
        cleanup::sweep_supervisors(&mut ctx.host.tools, &ctx.host.live);
    }
    ctx.timings.repair = t.elapsed();
    step
}

/// The same request again, with every name checked against the scan
/// directory (the failed update removed this live set's links: whatever
/// holds one of its names now is someone else's).
fn again<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    generation: u64,
    old: &DbRecord,
    probes: &[Probe],
    failure: &Cause,
) -> Result<Step, Cause> {
    let live = &ctx.host.live;
    let fresh = ctx
        .renderer
        .render(&ctx.request.vms, &mut |n| live.conflict(n))
        .map_err(|e| Cause::Refused(refusal(e)))?;
    let slot = build(ctx, generation, &fresh.tree)?;
    let record = record_of(&slot, &fresh.tree);
    ctx.memory.state.next = Some(record.clone());
    ctx.memory.save(&ctx.host.store);
    let current = ctx.host.live.compiled().unwrap_or_default();
    match run_update(ctx, &record, None, &current) {
        Switched::Clean(warning) => {
            let changes = plan_between(old, &record).changes();
            let (restarted, not_running) = commit_with_probes(ctx, record.clone(), probes);
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
            let failure = failure.clone();
            Ok((S6rcOutcome::Repaired { failure, repair }, shown))
        }
        other => Err(other.cause().unwrap_or_else(|| failure.clone())),
    }
}

/// Back to the database that was live, links and all, before.
fn rollback<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    old: &DbRecord,
    failure: Cause,
    repair: Cause,
    shown: Shown,
) -> Step {
    let current = ctx.host.live.compiled().unwrap_or_default();
    let recovery = match run_update(ctx, old, None, &current) {
        Switched::Clean(_) => {
            let running = &ctx.memory.state.running;
            let running = restart::refresh(running, &mut ctx.host.pid_of());
            commit(ctx, old.clone(), running);
            Recovery::RolledBack {
                repair,
                to: old.database.clone(),
            }
        }
        other => {
            ctx.adopt_current();
            ctx.memory.force = Some(Forced::Unrepaired);
            save_and_collect(ctx);
            Recovery::Unrecovered {
                repair,
                rollback: other.cause().unwrap_or_else(|| failure.clone()),
                live: ctx.host.live.path().to_owned(),
                scandir: ctx.host.live.scandir().to_owned(),
            }
        }
    };
    (S6rcOutcome::FailedAfterSwitch { failure, recovery }, shown)
}
