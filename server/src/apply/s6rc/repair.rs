//! Repairing a failure after the switch, and recording a live database
//! the applier did not expect.
//!
//! s6-rc-update can fail *after* `LIVE` was switched, typically with exit 111
//! and every scan-directory link of the live set removed: the running VMs
//! survive only until the next prune of the scan directory (s6rc.md §2.6).
//! The repair runs at once: first an update to the same request rendered
//! again — with every name checked against the scan directory, so a name
//! someone else took in the meantime is left out — and if that fails too, an
//! update back to the previous database, which had all its links a moment
//! ago. Neither restarts a running VM.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vm_catalog_protocol::ApplyStatus;

use super::render::Rendered;
use super::report::{diff_summary, left_out_note, pending_note};
use super::restart::{self, Probe};
use super::state::DbRecord;
use super::switch::{Switched, record_of};
use super::tools::S6rc;
use super::{ApplyReport, ApplyRequest, S6rcApplier};

impl<T: S6rc> S6rcApplier<T> {
    /// Repairs a failure after the switch: update again to a freshly
    /// validated tree; failing that, roll back to `old`.
    pub(super) fn repair(
        &mut self,
        request: &ApplyRequest,
        rendered: &Rendered,
        old: &DbRecord,
        probes: &[Probe],
        why: String,
        t0: Instant,
    ) -> ApplyReport {
        let t = Instant::now();
        let mut msg = format!("s6-rc-update failed: {why}");
        tracing::error!("{msg}; repairing");
        // The failed update removed this live set's links: whatever holds
        // one of its names now is someone else's.
        let live = &self.live;
        let again = self
            .renderer
            .render(&request.vms, &mut |n| live.conflict(n));
        match again.map_err(|e| e.to_string()).and_then(|r| {
            let slot = self.build(request.generation, &r.tree)?;
            Ok((r, slot))
        }) {
            Ok((fresh, slot)) => {
                let record = record_of(&slot, &fresh.tree);
                self.state.next = Some(record.clone());
                self.save_state();
                let current = self.live.compiled().unwrap_or_default();
                match self.run_update(&record, None, &current) {
                    Switched::Clean(_) => {
                        self.commit_with_probes(record.clone(), probes);
                        self.timings.repair = t.elapsed();
                        msg += &format!(
                            "; repaired by switching to {} ({} services, {})",
                            record.database.display(),
                            fresh.tree.services.len(),
                            diff_summary(Some(old), &record)
                        );
                        msg += &pending_note(&self.state.running);
                        msg += &left_out_note(&fresh.left_out);
                        return self.finish(request, ApplyStatus::Repaired, msg, &fresh, t0);
                    }
                    other => msg += &format!("; repair failed: {}", describe_switched(&other)),
                }
            }
            Err(e) => msg += &format!("; repair failed: {e}"),
        }
        // Roll back to the database that was live, links and all, before.
        let current = self.live.compiled().unwrap_or_default();
        let rollback = self.run_update(old, None, &current);
        self.timings.repair = t.elapsed();
        match rollback {
            Switched::Clean(_) => {
                let running = restart::refresh(&self.state.running, &mut |n| {
                    self.tools.pid(self.live.path(), n.as_str())
                });
                self.commit(old.clone(), running);
                msg += &format!(
                    "; rolled back to the previous database {}, whose services are supervised again",
                    old.database.display()
                );
            }
            other => {
                self.adopt_current();
                self.force = Some("the last update could not be repaired".into());
                msg += &format!(
                    "; rollback failed: {}. The scan directory links of {} may be missing, and the \
                     next prune of {} (any s6-rc-update on it) stops every VM: run s6-rc-update -l {} \
                     with a valid database now",
                    describe_switched(&other),
                    self.live.path().display(),
                    self.live.scandir().display(),
                    self.live.path().display()
                );
                self.cleanup();
            }
        }
        self.finish(request, ApplyStatus::FailedAfterSwitch, msg, rendered, t0)
    }

    /// The state for a live database the applier does not know.
    pub(super) fn adopt_unknown(&mut self, db: &Path, record: DbRecord) {
        if record.database == db {
            self.state.live = Some(record);
        } else {
            let services = match self.tools.longruns(self.live.path()) {
                Ok(names) => names
                    .iter()
                    .filter_map(|n| n.parse().ok())
                    .map(|n| (n, None))
                    .collect(),
                Err(_) => BTreeMap::new(),
            };
            let source = self.store.source_of(db).filter(|s| s.is_dir());
            self.state.live = Some(DbRecord {
                database: db.to_owned(),
                source,
                tree: None,
                services,
            });
        }
        self.state.next = None;
        self.state.running.clear();
    }

    /// Whatever `LIVE/compiled` points to now becomes the recorded live
    /// database.
    pub(super) fn adopt_current(&mut self) {
        let Some(db) = self.live.compiled() else {
            self.state.live = None;
            self.state.next = None;
            return;
        };
        let known = [self.state.live.clone(), self.state.next.clone()]
            .into_iter()
            .flatten()
            .find(|r| r.database == db);
        match known {
            Some(r) => {
                self.state.live = Some(r);
                self.state.next = None;
            }
            None => {
                let placeholder = DbRecord {
                    database: PathBuf::new(),
                    source: None,
                    tree: None,
                    services: BTreeMap::new(),
                };
                self.adopt_unknown(&db, placeholder);
            }
        }
    }
}

fn describe_switched(s: &Switched) -> String {
    match s {
        Switched::Clean(_) => "it worked".into(),
        Switched::Damaged(why) | Switched::Kept(why) | Switched::Elsewhere(why) => why.clone(),
    }
}
