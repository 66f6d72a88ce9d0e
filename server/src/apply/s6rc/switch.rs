//! The switch stage: compile a planned tree and switch it in — `s6-rc-init`
//! the first time, `s6-rc-update` afterwards (`update.rs` reads what it
//! did) — and hand a failure after the switch to the repair stage.
//!
//! The database being switched to is recorded in `state.json` (`next`)
//! before the switch, so that a restarted daemon knows what an update it did
//! not see finish switched to.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::time::Instant;

use vm_catalog_protocol::VmName;

use super::adopt::{self, INTERNAL_SERVICES};
use super::commit::{build, commit, commit_with_probes, definitions, record_of, save_and_discard};
use super::config::S6rcConfig;
use super::live::LiveState;
use super::outcome::{Cause, Forced, How, Recovery, S6rcOutcome, Switch};
use super::plan::Planned;
use super::state::DbRecord;
use super::tools::{Init, S6rc};
use super::update::{Switched, run_update};
use super::{Memory, Shown, Step, System, Wanted, repair};
use crate::apply::fingerprint::Fingerprint;
use crate::apply::restart::{self, Probe};

/// Compiles and switches to `planned`, the plan of `wanted`.
pub(super) fn switch<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    config: &S6rcConfig,
    wanted: &Wanted<'_>,
    planned: &Planned,
) -> Step {
    let shown = planned.into();
    let scandir = sys.live.scandir().to_owned();
    if !sys.tools.scanner_running(&scandir) {
        return failed_before(sys, memory, Cause::NoScanner { scandir }, shown);
    }
    let tree = &planned.rendered.tree;
    let slot = match build(sys, &mut memory.timings, wanted.generation, tree) {
        Ok(slot) => slot,
        Err(cause) => return failed_before(sys, memory, cause, shown),
    };
    let record = record_of(&slot, tree);
    match sys.live.state() {
        LiveState::Absent => init(sys, memory, config, planned, record),
        LiveState::Present(_) => update(sys, memory, config, wanted, planned, record),
        LiveState::Broken(why) => {
            let live = sys.live.path().to_owned();
            failed_before(sys, memory, Cause::LiveBroken { live, why }, shown)
        }
    }
}

/// The first switch: `s6-rc-init` of `record`.
fn init<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    config: &S6rcConfig,
    planned: &Planned,
    record: DbRecord,
) -> Step {
    let shown = planned.into();
    let live = sys.live.clone();
    if let Some((name, by)) = INTERNAL_SERVICES
        .iter()
        .find_map(|n| live.conflict(n).map(|w| (n, w)))
    {
        let entry = live.link(name);
        return failed_before(sys, memory, Cause::EntryTaken { entry, by }, shown);
    }
    memory.state.next = Some(record.clone());
    memory.save(&sys.store);
    let t = Instant::now();
    let result = sys.tools.init(&Init {
        db: &record.database,
        live: live.path(),
        prefix: &config.prefix,
        scandir: live.scandir(),
        timeout: config.init_timeout,
    });
    memory.timings.switch = t.elapsed();
    match (result, live.compiled()) {
        (Ok(()), Some(db)) if db == record.database => {
            let switch = Switch {
                how: How::Init {
                    live: live.path().to_owned(),
                },
                target: db,
                services: planned.rendered.tree.services.len(),
                changes: planned.plan.changes(),
                restarted: Vec::new(),
                not_running: Vec::new(),
                warning: None,
                forced: memory.force.take(),
            };
            commit(sys, memory, record, BTreeMap::new());
            (S6rcOutcome::Applied(switch), shown)
        }
        (result, None) => {
            memory.state.next = None;
            let cause = match result {
                Err(e) => Cause::Program(e),
                Ok(()) => Cause::LiveBroken {
                    live: live.path().to_owned(),
                    why: "s6-rc-init exited 0 and left no live directory".into(),
                },
            };
            failed_before(sys, memory, cause, shown)
        }
        (result, Some(db)) => {
            // s6-rc-init cleans up after itself; a live directory left by a
            // failed init is kept as it is and updated next time.
            adopt::adopt_unknown(sys, memory, &db, record);
            memory.force = Some(Forced::InitFailed);
            save_and_discard(sys, memory);
            let failure = Cause::InitLeftLive {
                error: result.err(),
                live: live.path().to_owned(),
                compiled: db,
            };
            let recovery = Recovery::NextApply;
            (S6rcOutcome::FailedAfterSwitch { failure, recovery }, shown)
        }
    }
}

/// A later switch: `s6-rc-update` to `record`, repaired if it breaks.
fn update<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    config: &S6rcConfig,
    wanted: &Wanted<'_>,
    planned: &Planned,
    record: DbRecord,
) -> Step {
    let shown = planned.into();
    let Some(old) = memory.state.live.clone() else {
        let live = sys.live.path().to_owned();
        let why = "cannot read what it runs".to_string();
        return failed_before(sys, memory, Cause::LiveBroken { live, why }, shown);
    };
    let probes = probes(sys, memory, &old, &definitions(&record));
    let conversions = config
        .restart_changed
        .then(|| write_conversions(sys, &probes))
        .flatten();
    memory.state.next = Some(record.clone());
    memory.save(&sys.store);
    let t = Instant::now();
    let switched = run_update(sys, &record, conversions.as_deref(), &old.database);
    memory.timings.switch = t.elapsed();
    match switched {
        Switched::Clean(warning) => {
            let (restarted, not_running) = commit_with_probes(sys, memory, record.clone(), &probes);
            let switch = Switch {
                how: How::Update,
                target: record.database,
                services: planned.rendered.tree.services.len(),
                changes: planned.plan.changes(),
                restarted,
                not_running,
                warning,
                forced: memory.force.take(),
            };
            (S6rcOutcome::Applied(switch), shown)
        }
        Switched::Kept(cause) => {
            memory.state.next = None;
            failed_before(sys, memory, cause, shown)
        }
        Switched::Damaged(failure) => {
            let damage = repair::Damage {
                old: &old,
                probes: &probes,
                failure,
                shown,
            };
            repair::repair(sys, memory, wanted, damage)
        }
        Switched::Elsewhere(failure) => {
            adopt::adopt_current(sys, memory);
            save_and_discard(sys, memory);
            let recovery = Recovery::NextApply;
            (S6rcOutcome::FailedAfterSwitch { failure, recovery }, shown)
        }
    }
}

/// The running VMs that stay and whose definition changes. Only the VMs
/// whose definition changes, or that are restart-pending, can be: the pids
/// of the others are not read (one file each, for every VM that stays).
fn probes<T: S6rc>(
    sys: &mut System<T>,
    memory: &Memory,
    old: &DbRecord,
    new: &BTreeMap<VmName, Fingerprint>,
) -> Vec<Probe> {
    let running = &memory.state.running;
    let staying = old.services.iter().filter_map(|(n, was)| {
        let now = new.get(n)?;
        (running.contains_key(n) || *was != Some(*now)).then_some(n)
    });
    restart::probes(staying, &old.services, running, new, &mut sys.pid_of())
}

/// Writes `NAME restart` for every probe (all of them are in the live
/// database) and returns the file (`restart_changed`).
fn write_conversions<T: S6rc>(sys: &System<T>, probes: &[Probe]) -> Option<PathBuf> {
    if probes.is_empty() {
        return None;
    }
    let text: String = probes
        .iter()
        .map(|p| format!("{} restart\n", p.name))
        .collect();
    let path = sys.store.conversions();
    match fs::write(&path, text) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the conversion file: no VM is restarted");
            None
        }
    }
}

/// A failure before any switch: the previous database stays live.
fn failed_before<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    cause: Cause,
    shown: Shown,
) -> Step {
    let refreshed = restart::refresh(&memory.state.running, &mut sys.pid_of());
    memory.state.running = refreshed;
    save_and_discard(sys, memory);
    (S6rcOutcome::FailedBeforeSwitch(cause), shown)
}
