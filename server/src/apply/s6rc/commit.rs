//! The steps a switch and a repair share: building a database (its source
//! written, then compiled into a fresh slot), recording a database as live
//! (commit), and saving the state while discarding the databases that are
//! no longer needed.

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use vm_catalog_protocol::VmName;

use super::outcome::Cause;
use super::render::Tree;
use super::source;
use super::state::{DbRecord, Running};
use super::store::{Slot, remove_any};
use super::tools::S6rc;
use super::{Memory, System, Timings};
use crate::apply::fingerprint::Fingerprint;
use crate::apply::plan::Delta;
use crate::apply::restart::{self, Probe};

/// Writes and compiles `tree` into a fresh slot of generation `generation`.
pub(super) fn build<T: S6rc>(
    sys: &mut System<T>,
    timings: &mut Timings,
    generation: u64,
    tree: &Tree,
) -> Result<Slot, Cause> {
    let slot = sys.store.allocate(generation);
    let t = Instant::now();
    let written = source::write_linked(tree, &sys.store, &slot.tmp)
        .and_then(|w| fs::rename(&slot.tmp, &slot.source).map(|()| w));
    timings.write += t.elapsed();
    match written {
        Ok(w) => timings.written += w.written,
        Err(e) => {
            let _ = remove_any(&slot.tmp);
            return Err(Cause::WriteSource {
                path: slot.tmp,
                error: e.to_string(),
            });
        }
    }
    let t = Instant::now();
    let compiled = sys.tools.compile(&slot.db, &slot.source);
    timings.compile += t.elapsed();
    if let Err(e) = compiled {
        let _ = remove_any(&slot.db);
        let _ = remove_any(&slot.source);
        return Err(Cause::Program(e));
    }
    Ok(slot)
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

/// Records `record` as live with the probes that kept their pid as
/// restart-pending. Returns the other probes: those that run with a new
/// pid (restarted by the conversion file, or by s6-rc-update because a
/// provider is new) and those that are down.
pub(super) fn commit_with_probes<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    record: DbRecord,
    probes: &[Probe],
) -> (Vec<VmName>, Vec<VmName>) {
    let mut pid_of = sys.pid_of();
    let running = restart::settle(probes, &mut pid_of);
    let (mut restarted, mut down) = (Vec::new(), Vec::new());
    for p in probes.iter().filter(|p| !running.contains_key(&p.name)) {
        match pid_of(&p.name) {
            Some(_) => restarted.push(p.name.clone()),
            None => down.push(p.name.clone()),
        }
    }
    drop(pid_of);
    commit(sys, memory, record, running);
    (restarted, down)
}

/// Records `record` as live, saves the state; the rest goes at the next
/// tidy.
pub(super) fn commit<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    record: DbRecord,
    running: BTreeMap<VmName, Running>,
) {
    let state = &mut memory.state;
    state.live = Some(record);
    state.next = None;
    state.running = running;
    save_and_discard(sys, memory);
}

/// Saves the state, and moves every compiled database but the live one
/// (and the one an update may switch to) out of the way: a rename each,
/// under the live lock; they are deleted in the background. Their sources
/// go at the next [`tidy`](crate::apply::Applier::tidy), after the reply.
pub(super) fn save_and_discard<T: S6rc>(sys: &mut System<T>, memory: &mut Memory) {
    let t = Instant::now();
    memory.save(&sys.store);
    let next = memory.state.next.as_ref().map(|r| r.database.as_path());
    super::cleanup::discard_old_databases(&sys.live, &sys.store, next);
    memory.untidy = true;
    memory.timings.cleanup += t.elapsed();
}

/// The definitions `record` knows, by VM.
pub(super) fn definitions(record: &DbRecord) -> BTreeMap<VmName, Fingerprint> {
    record
        .services
        .iter()
        .filter_map(|(n, d)| d.map(|d| (n.clone(), d)))
        .collect()
}

/// What changes from `old` to `new`, for a repair's report.
pub(super) fn delta_between(old: &DbRecord, new: &DbRecord) -> Delta {
    Delta::between(&old.services, &definitions(new))
}
