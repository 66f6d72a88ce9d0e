//! The switch stage: compile a planned tree and switch it in — `s6-rc-init`
//! the first time, `s6-rc-update` afterwards — then verify what is live.
//!
//! After s6-rc-update, `LIVE/compiled` decides (s6rc.md §3.5), as a
//! [`Switched`] value:
//! - still the old database: the update failed before the switch (a timed
//!   out update included: it was killed), the old database stays live;
//! - the new database, exit 0 (or 1/2: some VM failed to restart) and every
//!   scan-directory link present: applied;
//! - the new database otherwise (exit 111 after the switch removes every link
//!   of the live set, §2.6): damaged, handed to the repair stage.
//!
//! The database being switched to is recorded in `state.json` (`next`)
//! before the switch, so that a restarted daemon knows what an update it did
//! not see finish switched to.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_catalog_protocol::VmName;

use super::adopt::INTERNAL_SERVICES;
use super::outcome::{Cause, How, Recovery, S6rcOutcome, Switch};
use super::plan::Planned;
use super::render::Tree;
use super::source;
use super::state::{DbRecord, Running};
use super::store::{Slot, remove_any};
use super::tools::{Init, S6rc, ToolError};
use super::{Ctx, Step, repair};
use crate::apply::plan::Delta;
use crate::apply::restart::{self, Probe};

/// How one s6-rc-update ended, as `LIVE/compiled` and the links show.
#[derive(Debug)]
pub(super) enum Switched {
    /// `LIVE/compiled` is the new database and every link is there; the
    /// error, if any, is exit 1 or 2 (a VM failed to restart).
    Clean(Option<ToolError>),
    /// `LIVE/compiled` is still the old database.
    Kept(Cause),
    /// `LIVE/compiled` is the new database but the update failed otherwise,
    /// or links are missing ([`Cause::Damaged`]).
    Damaged(Cause),
    /// `LIVE/compiled` is something else entirely ([`Cause::Elsewhere`]).
    Elsewhere(Cause),
}

impl Switched {
    /// Why it is not clean.
    pub(super) fn cause(self) -> Option<Cause> {
        match self {
            Switched::Clean(_) => None,
            Switched::Kept(c) | Switched::Damaged(c) | Switched::Elsewhere(c) => Some(c),
        }
    }
}

/// Compiles and switches to `planned`.
pub(super) fn switch<T: S6rc>(ctx: &mut Ctx<'_, T>, generation: u64, planned: &Planned) -> Step {
    let shown = planned.into();
    let scandir = ctx.host.live.scandir().to_owned();
    if !ctx.host.tools.scanner_running(&scandir) {
        return failed_before(ctx, Cause::NoScanner { scandir }, shown);
    }
    let slot = match build(ctx, generation, &planned.rendered.tree) {
        Ok(slot) => slot,
        Err(cause) => return failed_before(ctx, cause, shown),
    };
    let record = record_of(&slot, &planned.rendered.tree);
    match ctx.host.live.state() {
        super::live::LiveState::Absent => init(ctx, planned, record),
        super::live::LiveState::Present(_) => update(ctx, generation, planned, record),
        super::live::LiveState::Broken(why) => {
            let live = ctx.host.live.path().to_owned();
            failed_before(ctx, Cause::LiveBroken { live, why }, shown)
        }
    }
}

/// Writes and compiles `tree` into a fresh slot.
pub(super) fn build<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    generation: u64,
    tree: &Tree,
) -> Result<Slot, Cause> {
    let slot = ctx.host.store.allocate(generation);
    let t = Instant::now();
    let written = source::write_linked(tree, &ctx.host.store, &slot.tmp)
        .and_then(|w| fs::rename(&slot.tmp, &slot.source).map(|()| w));
    ctx.timings.write += t.elapsed();
    match written {
        Ok(w) => ctx.timings.written += w.written,
        Err(e) => {
            let _ = remove_any(&slot.tmp);
            return Err(Cause::WriteSource {
                path: slot.tmp,
                error: e.to_string(),
            });
        }
    }
    let t = Instant::now();
    let compiled = ctx.host.tools.compile(&slot.db, &slot.source);
    ctx.timings.compile += t.elapsed();
    if let Err(e) = compiled {
        let _ = remove_any(&slot.db);
        let _ = remove_any(&slot.source);
        return Err(Cause::Program(e));
    }
    Ok(slot)
}

fn init<T: S6rc>(ctx: &mut Ctx<'_, T>, planned: &Planned, record: DbRecord) -> Step {
    let shown = planned.into();
    let live = ctx.host.live.clone();
    if let Some((name, by)) = INTERNAL_SERVICES
        .iter()
        .find_map(|n| live.conflict(n).map(|w| (n, w)))
    {
        let entry = live.link(name);
        return failed_before(ctx, Cause::EntryTaken { entry, by }, shown);
    }
    ctx.memory.state.next = Some(record.clone());
    ctx.memory.save(&ctx.host.store);
    let t = Instant::now();
    let result = ctx.host.tools.init(&Init {
        db: &record.database,
        live: live.path(),
        prefix: &ctx.config.prefix,
        scandir: live.scandir(),
        timeout: ctx.config.init_timeout,
    });
    ctx.timings.switch = t.elapsed();
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
                forced: ctx.memory.force.take(),
            };
            commit(ctx, record, BTreeMap::new());
            (S6rcOutcome::Applied(switch), shown)
        }
        (result, None) => {
            ctx.memory.state.next = None;
            let cause = match result {
                Err(e) => Cause::Program(e),
                Ok(()) => Cause::LiveBroken {
                    live: live.path().to_owned(),
                    why: "s6-rc-init exited 0 and left no live directory".into(),
                },
            };
            failed_before(ctx, cause, shown)
        }
        (result, Some(db)) => {
            // s6-rc-init cleans up after itself; a live directory left by a
            // failed init is kept as it is and updated next time.
            ctx.adopt_unknown(&db, record);
            ctx.memory.force = Some(super::outcome::Forced::InitFailed);
            cleanup(ctx);
            let failure = Cause::InitLeftLive {
                error: result.err(),
                live: live.path().to_owned(),
                compiled: db,
            };
            let outcome = S6rcOutcome::FailedAfterSwitch {
                failure,
                recovery: Recovery::NextApply,
            };
            (outcome, shown)
        }
    }
}

fn update<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    generation: u64,
    planned: &Planned,
    record: DbRecord,
) -> Step {
    let shown = planned.into();
    let Some(old) = ctx.memory.state.live.clone() else {
        let live = ctx.host.live.path().to_owned();
        let why = "cannot read what it runs".to_string();
        return failed_before(ctx, Cause::LiveBroken { live, why }, shown);
    };
    let new_defs = definitions(&record);
    let probes = probes(ctx, &old, &new_defs);
    let conversions = write_conversions(ctx, &probes);
    ctx.memory.state.next = Some(record.clone());
    ctx.memory.save(&ctx.host.store);
    let t = Instant::now();
    let switched = run_update(ctx, &record, conversions.as_deref(), &old.database);
    ctx.timings.switch = t.elapsed();
    match switched {
        Switched::Clean(warning) => {
            let (restarted, not_running) = commit_with_probes(ctx, record.clone(), &probes);
            let switch = Switch {
                how: How::Update,
                target: record.database,
                services: planned.rendered.tree.services.len(),
                changes: planned.plan.changes(),
                restarted,
                not_running,
                warning,
                forced: ctx.memory.force.take(),
            };
            (S6rcOutcome::Applied(switch), shown)
        }
        Switched::Kept(cause) => {
            ctx.memory.state.next = None;
            failed_before(ctx, cause, shown)
        }
        Switched::Damaged(failure) => {
            repair::repair(ctx, generation, &old, &probes, failure, shown)
        }
        Switched::Elsewhere(failure) => {
            ctx.adopt_current();
            cleanup(ctx);
            let outcome = S6rcOutcome::FailedAfterSwitch {
                failure,
                recovery: Recovery::NextApply,
            };
            (outcome, shown)
        }
    }
}

/// Runs s6-rc-update to `record` from `old` and reads what it did.
pub(super) fn run_update<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    record: &DbRecord,
    conversions: Option<&Path>,
    old: &Path,
) -> Switched {
    let live = &ctx.host.live;
    let result = ctx
        .host
        .tools
        .update(live.path(), &record.database, conversions);
    let now = live.compiled();
    if now.as_deref() == Some(old) && old != record.database {
        let cause = match result {
            Err(error @ ToolError::TimedOut { .. }) => {
                // Killed at its deadline: say who else works on the live
                // directory (a person's s6-rc holding the lock, typically).
                let others = ctx
                    .host
                    .tools
                    .programs_on(live.path(), ctx.host.store.root());
                Cause::TimedOut {
                    error,
                    others,
                    lock_holder: live.lock_holder(),
                }
            }
            Err(e) => Cause::Program(e),
            Ok(()) => Cause::Elsewhere {
                error: None,
                live: live.path().to_owned(),
                compiled: now,
            },
        };
        return Switched::Kept(cause);
    }
    if now.as_deref() != Some(record.database.as_path()) {
        return Switched::Elsewhere(Cause::Elsewhere {
            error: result.err(),
            live: live.path().to_owned(),
            compiled: now,
        });
    }
    let mut names: Vec<&str> = INTERNAL_SERVICES.to_vec();
    names.extend(record.services.keys().map(VmName::as_str));
    let missing = live.missing_links(names);
    match result {
        Ok(()) if missing.is_empty() => Switched::Clean(None),
        Err(e) if matches!(e.code(), Some(1 | 2)) && missing.is_empty() => Switched::Clean(Some(e)),
        result => Switched::Damaged(Cause::Damaged {
            error: result.err(),
            missing,
        }),
    }
}

/// The running VMs that stay and whose definition changes. Only the VMs
/// whose definition changes, or that are restart-pending, can be: the pids
/// of the others are not read (one file each, for every VM that stays).
fn probes<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    old: &DbRecord,
    new: &BTreeMap<VmName, crate::apply::fingerprint::Fingerprint>,
) -> Vec<Probe> {
    let running = &ctx.memory.state.running;
    let staying = old.services.iter().filter_map(|(n, was)| {
        let now = new.get(n)?;
        (running.contains_key(n) || *was != Some(*now)).then_some(n)
    });
    restart::probes(staying, &old.services, running, new, &mut ctx.host.pid_of())
}

/// With `restart_changed`, writes `NAME restart` for every probe (all of
/// them are in the live database) and returns the file.
fn write_conversions<T: S6rc>(ctx: &mut Ctx<'_, T>, probes: &[Probe]) -> Option<PathBuf> {
    if !ctx.config.restart_changed || probes.is_empty() {
        return None;
    }
    let text: String = probes
        .iter()
        .map(|p| format!("{} restart\n", p.name))
        .collect();
    let path = ctx.host.store.conversions();
    match fs::write(&path, text) {
        Ok(()) => Some(path),
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the conversion file: no VM is restarted");
            None
        }
    }
}

/// Records `record` as live with the probes that kept their pid as
/// restart-pending. Returns the other probes: those that run with a new
/// pid (restarted by the conversion file, or by s6-rc-update because a
/// provider is new) and those that are down.
pub(super) fn commit_with_probes<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    record: DbRecord,
    probes: &[Probe],
) -> (Vec<VmName>, Vec<VmName>) {
    let mut pid_of = ctx.host.pid_of();
    let running = restart::settle(probes, &mut pid_of);
    let (mut restarted, mut down) = (Vec::new(), Vec::new());
    for p in probes.iter().filter(|p| !running.contains_key(&p.name)) {
        match pid_of(&p.name) {
            Some(_) => restarted.push(p.name.clone()),
            None => down.push(p.name.clone()),
        }
    }
    drop(pid_of);
    commit(ctx, record, running);
    (restarted, down)
}

/// Records `record` as live, saves the state; the rest goes at the next
/// tidy.
pub(super) fn commit<T: S6rc>(
    ctx: &mut Ctx<'_, T>,
    record: DbRecord,
    running: BTreeMap<VmName, Running>,
) {
    let state = &mut ctx.memory.state;
    state.live = Some(record);
    state.next = None;
    state.running = running;
    cleanup(ctx);
}

/// Saves the state, and moves every compiled database but the live one out
/// of the way (a rename each, under the live lock; they are deleted in the
/// background). Their sources go at the next
/// [`tidy`](crate::apply::Applier::tidy), after the reply.
pub(super) fn cleanup<T: S6rc>(ctx: &mut Ctx<'_, T>) {
    let t = Instant::now();
    ctx.memory.save(&ctx.host.store);
    let next = ctx.memory.state.next.as_ref().map(|r| r.database.as_path());
    super::cleanup::discard_old_databases(&ctx.host.live, &ctx.host.store, next);
    ctx.memory.untidy = true;
    ctx.timings.cleanup += t.elapsed();
}

/// A failure before any switch: the previous database stays live.
fn failed_before<T: S6rc>(ctx: &mut Ctx<'_, T>, cause: Cause, shown: super::Shown) -> Step {
    let running = &ctx.memory.state.running;
    let refreshed = restart::refresh(running, &mut ctx.host.pid_of());
    ctx.memory.state.running = refreshed;
    cleanup(ctx);
    (S6rcOutcome::FailedBeforeSwitch(cause), shown)
}

/// The record of the database compiled into `slot` from `tree`.
pub(super) fn record_of(slot: &Slot, tree: &Tree) -> DbRecord {
    DbRecord {
        database: slot.db.clone(),
        source: Some(slot.source.clone()),
        tree: Some(tree.fingerprint),
        services: tree
            .services
            .iter()
            .map(|(n, s)| (n.clone(), Some(s.definition)))
            .collect(),
    }
}

fn definitions(record: &DbRecord) -> BTreeMap<VmName, crate::apply::fingerprint::Fingerprint> {
    record
        .services
        .iter()
        .filter_map(|(n, d)| d.map(|d| (n.clone(), d)))
        .collect()
}

/// The plan from `old` to `new`, for a repair's report.
pub(super) fn plan_between(old: &DbRecord, new: &DbRecord) -> Delta {
    Delta::between(&old.services, &definitions(new))
}
