//! Compiling a rendered tree and switching it in: `s6-rc-init` the first
//! time, `s6-rc-update` afterwards; then checking what is live, repairing a
//! failure after the switch, and deleting every other database.
//!
//! After s6-rc-update, `LIVE/compiled` decides (s6rc.md §3.5):
//! - still the old database: the update failed before the switch, the old
//!   database stays live, the new one is deleted;
//! - the new database, exit 0 (or 1/2: some VM failed to restart) and every
//!   scan-directory link present: applied;
//! - the new database otherwise (exit 111 after the switch removes every link
//!   of the live set, §2.6): repaired at once by updating to a freshly
//!   validated copy of the tree; if that fails too, by rolling back to the
//!   previous database, which was live with all its links a moment ago.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_catalog_protocol::{ApplyStatus, VmName};

use super::adopt::INTERNAL_SERVICES;
use super::fingerprint::Fingerprint;
use super::live::LiveState;
use super::render::{Rendered, Tree};
use super::report::{diff_summary, join, left_out_note, pending_note};
use super::restart::{self, Probe};
use super::source;
use super::state::DbRecord;
use super::store::{Slot, remove_any};
use super::tools::{Init, S6rc, ToolError, update_code_meaning};
use super::{ApplyReport, ApplyRequest, S6rcApplier};

/// How one s6-rc-update ended, as `LIVE/compiled` and the links show.
#[derive(Debug)]
pub(super) enum Switched {
    /// `LIVE/compiled` is the new database and every link is there; the
    /// error, if any, is exit 1 or 2 (a VM failed to restart).
    Clean(Option<ToolError>),
    /// `LIVE/compiled` is the new database but the update failed otherwise,
    /// or links are missing.
    Damaged(String),
    /// `LIVE/compiled` is still the old database.
    Kept(String),
    /// `LIVE/compiled` is something else entirely.
    Elsewhere(String),
}

impl<T: S6rc> S6rcApplier<T> {
    pub(super) fn switch(
        &mut self,
        request: &ApplyRequest,
        rendered: Rendered,
        t0: Instant,
    ) -> ApplyReport {
        let scandir = self.live.scandir().to_owned();
        if !self.tools.scanner_running(&scandir) {
            let msg = format!("no s6-svscan is running on {}", scandir.display());
            return self.failed_before(request, &rendered, msg, None, t0);
        }
        let slot = match self.build(request.generation, &rendered.tree) {
            Ok(slot) => slot,
            Err(msg) => return self.failed_before(request, &rendered, msg, None, t0),
        };
        let record = record_of(&slot, &rendered.tree);
        match self.live.state() {
            LiveState::Absent => self.init(request, &rendered, record, t0),
            LiveState::Present(_) => self.update(request, &rendered, record, t0),
            LiveState::Broken(why) => {
                let msg = format!(
                    "live directory {} is unusable: {why}",
                    self.live.path().display()
                );
                self.failed_before(request, &rendered, msg, Some(&slot), t0)
            }
        }
    }

    /// Writes and compiles `tree` into a fresh slot.
    pub(super) fn build(&mut self, generation: u64, tree: &Tree) -> Result<Slot, String> {
        let slot = self.store.allocate(generation);
        let t = Instant::now();
        if let Err(e) =
            source::write(tree, &slot.tmp).and_then(|()| fs::rename(&slot.tmp, &slot.source))
        {
            let _ = remove_any(&slot.tmp);
            return Err(format!(
                "cannot write the service source {}: {e}",
                slot.tmp.display()
            ));
        }
        self.timings.write += t.elapsed();
        let t = Instant::now();
        let compiled = self.tools.compile(&slot.db, &slot.source);
        self.timings.compile += t.elapsed();
        if let Err(e) = compiled {
            let _ = remove_any(&slot.db);
            let _ = remove_any(&slot.source);
            return Err(e.to_string());
        }
        Ok(slot)
    }

    fn init(
        &mut self,
        request: &ApplyRequest,
        rendered: &Rendered,
        record: DbRecord,
        t0: Instant,
    ) -> ApplyReport {
        let slot_db = record.database.clone();
        if let Some((name, what)) = INTERNAL_SERVICES
            .iter()
            .find_map(|n| self.live.conflict(n).map(|w| (n, w)))
        {
            let msg = format!(
                "scan directory entry {} is taken by {what}: s6-rc-init would fail",
                self.live.link(name).display()
            );
            return self.failed_before(request, rendered, msg, None, t0);
        }
        self.state.next = Some(record.clone());
        self.save_state();
        let t = Instant::now();
        let result = self.tools.init(&Init {
            db: &slot_db,
            live: self.live.path(),
            prefix: &self.config.prefix,
            scandir: self.live.scandir(),
            timeout: self.config.init_timeout,
        });
        self.timings.switch = t.elapsed();
        let live_db = self.live.compiled();
        match (result, live_db) {
            (Ok(()), Some(db)) if db == slot_db => {
                let msg = format!(
                    "initialized {} with {} services ({})",
                    self.live.path().display(),
                    rendered.tree.services.len(),
                    diff_summary(None, &record)
                );
                self.commit(record, BTreeMap::new());
                let msg = msg + &left_out_note(&rendered.left_out);
                self.finish(request, ApplyStatus::Applied, msg, rendered, t0)
            }
            (result, None) => {
                let why = result
                    .err()
                    .map_or("no live directory afterwards".into(), |e| e.to_string());
                self.state.next = None;
                self.failed_before(
                    request,
                    rendered,
                    format!("s6-rc-init failed: {why}"),
                    None,
                    t0,
                )
            }
            (result, Some(db)) => {
                // s6-rc-init cleans up after itself; a live directory left by
                // a failed init is kept as it is and updated next time.
                let why = result.err().map_or(String::new(), |e| format!(": {e}"));
                self.adopt_unknown(&db, record);
                let msg = format!(
                    "s6-rc-init failed after creating {} (compiled -> {}){why}; the next apply updates it",
                    self.live.path().display(),
                    db.display()
                );
                self.force = Some("the last s6-rc-init failed".into());
                self.cleanup();
                self.finish(request, ApplyStatus::FailedAfterSwitch, msg, rendered, t0)
            }
        }
    }

    fn update(
        &mut self,
        request: &ApplyRequest,
        rendered: &Rendered,
        record: DbRecord,
        t0: Instant,
    ) -> ApplyReport {
        if self.state.live.is_none() {
            // A live directory appeared since start-up (an s6-rc-init by
            // hand): take it as it is.
            self.adopt_current();
        }
        let Some(old) = self.state.live.clone() else {
            let msg = format!(
                "cannot read the live directory {}",
                self.live.path().display()
            );
            let slot = Slot {
                db: record.database.clone(),
                source: record.source.clone().unwrap_or_default(),
                tmp: PathBuf::new(),
            };
            return self.failed_before(request, rendered, msg, Some(&slot), t0);
        };
        let new_defs = definitions(&record);
        let probes = self.probes(&old, &new_defs);
        let conversions = self.write_conversions(&probes);
        self.state.next = Some(record.clone());
        self.save_state();
        let t = Instant::now();
        let switched = self.run_update(&record, conversions.as_deref(), &old.database);
        self.timings.switch = t.elapsed();
        match switched {
            Switched::Clean(warning) => {
                let (restarted, down) = self.commit_with_probes(record.clone(), &probes);
                let mut msg = format!(
                    "switched to {} ({} services, {})",
                    record.database.display(),
                    rendered.tree.services.len(),
                    diff_summary(Some(&old), &record)
                );
                if !restarted.is_empty() {
                    msg += &format!("; restarted {}", join(&restarted));
                }
                if !down.is_empty() {
                    msg += &format!("; not running after the update: {}", join(&down));
                }
                if let Some(w) = warning {
                    let meaning = w.code().map_or("", update_code_meaning);
                    msg += &format!("; s6-rc-update reported {w} ({meaning})");
                }
                msg += &pending_note(&self.state.running);
                msg += &left_out_note(&rendered.left_out);
                if let Some(why) = self.force.take() {
                    msg += &format!("; {why}");
                }
                self.finish(request, ApplyStatus::Applied, msg, rendered, t0)
            }
            Switched::Kept(why) => {
                let msg = format!("s6-rc-update failed before the switch: {why}");
                self.state.next = None;
                self.failed_before(request, rendered, msg, None, t0)
            }
            Switched::Damaged(why) => self.repair(request, rendered, &old, &probes, why, t0),
            Switched::Elsewhere(why) => {
                self.adopt_current();
                let msg = format!("s6-rc-update failed: {why}");
                self.cleanup();
                self.finish(request, ApplyStatus::FailedAfterSwitch, msg, rendered, t0)
            }
        }
    }

    /// Runs s6-rc-update to `record` and reads what it did.
    pub(super) fn run_update(
        &mut self,
        record: &DbRecord,
        conversions: Option<&Path>,
        old: &Path,
    ) -> Switched {
        let result = self
            .tools
            .update(self.live.path(), &record.database, conversions);
        let now = self.live.compiled();
        let describe = |r: &Result<(), ToolError>| match r {
            Ok(()) => "it exited 0".to_string(),
            Err(e) => match e.code() {
                Some(c) => format!("{e} ({})", update_code_meaning(c)),
                None => e.to_string(),
            },
        };
        if now.as_deref() == Some(old) && old != record.database {
            return Switched::Kept(describe(&result));
        }
        if now.as_deref() != Some(record.database.as_path()) {
            let shown = now.map_or("nothing".into(), |p| p.display().to_string());
            return Switched::Elsewhere(format!(
                "{}, and {}/compiled points to {shown}",
                describe(&result),
                self.live.path().display()
            ));
        }
        let mut names: Vec<&str> = INTERNAL_SERVICES.to_vec();
        names.extend(record.services.keys().map(VmName::as_str));
        let missing = self.live.missing_links(names);
        match result {
            Ok(()) if missing.is_empty() => Switched::Clean(None),
            Err(e) if matches!(e.code(), Some(1 | 2)) && missing.is_empty() => {
                Switched::Clean(Some(e))
            }
            result => {
                let mut why = format!("{} after the switch", describe(&result));
                if !missing.is_empty() {
                    why += &format!(
                        ", {} scan directory links missing ({})",
                        missing.len(),
                        abbreviate(&missing)
                    );
                }
                Switched::Damaged(why)
            }
        }
    }

    /// The running VMs that stay and whose definition changes.
    fn probes(&mut self, old: &DbRecord, new: &BTreeMap<VmName, Fingerprint>) -> Vec<Probe> {
        let Self {
            tools, live, state, ..
        } = self;
        let mut pid_of = |n: &VmName| tools.pid(live.path(), n.as_str());
        let staying = old.services.keys().filter(|n| new.contains_key(*n));
        restart::probes(staying, &old.services, &state.running, new, &mut pid_of)
    }

    /// With `restart_changed`, writes `NAME restart` for every probe (all
    /// of them are in the live database) and returns the file.
    fn write_conversions(&mut self, probes: &[Probe]) -> Option<PathBuf> {
        if !self.config.restart_changed || probes.is_empty() {
            return None;
        }
        let text: String = probes
            .iter()
            .map(|p| format!("{} restart\n", p.name))
            .collect();
        let path = self.store.conversions();
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
    pub(super) fn commit_with_probes(
        &mut self,
        record: DbRecord,
        probes: &[Probe],
    ) -> (Vec<VmName>, Vec<VmName>) {
        let Self { tools, live, .. } = self;
        let mut pid_of = |n: &VmName| tools.pid(live.path(), n.as_str());
        let running = restart::settle(probes, &mut pid_of);
        let (mut restarted, mut down) = (Vec::new(), Vec::new());
        for p in probes.iter().filter(|p| !running.contains_key(&p.name)) {
            match pid_of(&p.name) {
                Some(_) => restarted.push(p.name.clone()),
                None => down.push(p.name.clone()),
            }
        }
        self.commit(record, running);
        (restarted, down)
    }

    /// Records `record` as live, saves the state, deletes the rest.
    pub(super) fn commit(
        &mut self,
        record: DbRecord,
        running: BTreeMap<VmName, super::state::Running>,
    ) {
        self.state.live = Some(record);
        self.state.next = None;
        self.state.running = running;
        self.cleanup();
    }

    /// Saves the state and deletes every database but the live one.
    pub(super) fn cleanup(&mut self) {
        let t = Instant::now();
        self.save_state();
        self.collect_garbage();
        self.timings.cleanup += t.elapsed();
    }

    /// A failure before any switch: the previous database stays live.
    fn failed_before(
        &mut self,
        request: &ApplyRequest,
        rendered: &Rendered,
        why: String,
        slot: Option<&Slot>,
        t0: Instant,
    ) -> ApplyReport {
        if let Some(slot) = slot {
            let _ = remove_any(&slot.db);
            let _ = remove_any(&slot.source);
        }
        let Self {
            tools, live, state, ..
        } = self;
        state.running =
            restart::refresh(&state.running, &mut |n| tools.pid(live.path(), n.as_str()));
        self.cleanup();
        let kept = match self.live.compiled() {
            Some(db) => format!("; {} stays live", db.display()),
            None => "; nothing is live".to_string(),
        };
        let msg =
            why + &kept + &pending_note(&self.state.running) + &left_out_note(&rendered.left_out);
        self.finish(request, ApplyStatus::FailedBeforeSwitch, msg, rendered, t0)
    }
}

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

fn definitions(record: &DbRecord) -> BTreeMap<VmName, Fingerprint> {
    record
        .services
        .iter()
        .filter_map(|(n, d)| d.map(|d| (n.clone(), d)))
        .collect()
}

/// At most five names, then how many more.
fn abbreviate(names: &[String]) -> String {
    let shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    match names.len() {
        n if n > 5 => format!("{shown} and {} more", n - 5),
        _ => shown,
    }
}
