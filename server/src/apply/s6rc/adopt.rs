//! Start-up: adopt what is live, reconcile the state file, clean up.
//!
//! s6-rc-init is never run over an existing live directory (0.5.4.1 breaks
//! it, s6rc.md §1.2): when `LIVE` exists, the applier takes it as it is and
//! updates from it. When `LIVE` is missing or dangling but one
//! `LIVE:s6-rc-*` directory next to it still has a usable database, `LIVE`
//! is pointed back at it (§3.6). When the live database itself was deleted,
//! its source is compiled again to the same path (§1.4). When the state file
//! does not describe the live database, the VMs are read from `s6-rc-db` and
//! the next apply updates even if nothing changed. Missing scan-directory
//! links also force that update, which restores them (§2.6).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::VmName;

use super::live::LiveState;
use super::state::{DbRecord, State};
use super::store::remove_any;
use super::tools::S6rc;
use super::{OpenError, S6rcApplier};

/// s6-rc's own longruns in every compiled database.
pub const INTERNAL_SERVICES: [&str; 2] = ["s6rc-oneshot-runner", "s6rc-fdholder"];

impl<T: S6rc> S6rcApplier<T> {
    pub(super) fn adopt(&mut self) -> Result<(), OpenError> {
        let db = match self.live.state() {
            LiveState::Present(db) => db,
            LiveState::Absent if self.live.siblings().is_empty() => {
                // Nothing is live (a fresh boot): the first apply inits.
                if self.state.live.is_some() || self.state.next.is_some() {
                    tracing::info!("no live directory: forgetting the previous boot's database");
                }
                self.state = State::new();
                self.save_state();
                self.collect_garbage();
                return Ok(());
            }
            LiveState::Broken(why) if !self.live_is_lost() => return Err(self.broken(why)),
            LiveState::Absent | LiveState::Broken(_) => self.relink_lost_live()?,
        };
        self.check_prefix()?;
        if !db.is_dir() {
            self.recompile_live(&db)?;
        }
        self.reconcile(&db)?;
        self.collect_garbage();
        self.remove_stale_live_dirs();
        Ok(())
    }

    fn broken(&self, reason: String) -> OpenError {
        OpenError::Live {
            live: self.live.path().to_owned(),
            reason,
        }
    }

    /// `LIVE` is missing or a dangling symlink.
    fn live_is_lost(&self) -> bool {
        let p = self.live.path();
        fs::symlink_metadata(p).is_err()
            || (fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
                && fs::metadata(p).is_err())
    }

    /// Points `LIVE` at the one `LIVE:s6-rc-*` directory with a usable
    /// database.
    fn relink_lost_live(&mut self) -> Result<PathBuf, OpenError> {
        let usable: Vec<(PathBuf, PathBuf)> = self
            .live
            .siblings()
            .into_iter()
            .filter_map(|d| {
                let db = fs::read_link(d.join("compiled")).ok()?;
                db.is_dir().then_some((d, db))
            })
            .collect();
        let known = |db: &Path| {
            [&self.state.live, &self.state.next]
                .iter()
                .any(|r| r.as_ref().is_some_and(|r| r.database == db))
        };
        let chosen = match usable.as_slice() {
            [one] => one.clone(),
            many => match many
                .iter()
                .filter(|(_, db)| known(db))
                .collect::<Vec<_>>()
                .as_slice()
            {
                [one] => (*one).clone(),
                _ => {
                    let list: Vec<String> = usable
                        .iter()
                        .map(|(d, _)| d.display().to_string())
                        .collect();
                    return Err(self.broken(format!(
                        "it is missing or dangling, and {} live directories next to it have a \
                         usable database ({}): point it at the one its supervisors use \
                         (ln -sfn DIR {})",
                        usable.len(),
                        list.join(", "),
                        self.live.path().display()
                    )));
                }
            },
        };
        self.live
            .relink(&chosen.0)
            .map_err(|e| self.broken(format!("cannot point it at {}: {e}", chosen.0.display())))?;
        tracing::warn!(
            live = %self.live.path().display(),
            target = %chosen.0.display(),
            "the live directory link was lost: pointed it back at the only usable live directory"
        );
        Ok(chosen.1)
    }

    fn check_prefix(&self) -> Result<(), OpenError> {
        let recorded = self
            .live
            .recorded_prefix()
            .map_err(|e| self.broken(format!("cannot read its prefix: {e}")))?;
        if recorded != self.config.prefix {
            return Err(self.broken(format!(
                "it was created with prefix {recorded:?} but the configuration says {:?}, and \
                 s6-rc-update cannot change a prefix: configure {recorded:?}, or stop its \
                 services and remove it (a reboot does)",
                self.config.prefix
            )));
        }
        Ok(())
    }

    /// The live database was deleted: compile its source again to the same
    /// path (compilation is deterministic).
    fn recompile_live(&mut self, db: &Path) -> Result<(), OpenError> {
        let source = self
            .store
            .source_of(db)
            .filter(|s| s.is_dir())
            .ok_or_else(|| {
                self.broken(format!(
                    "its compiled database {} is gone and its source is not in {}: every s6-rc \
                 command on it fails until the database is restored",
                    db.display(),
                    self.store.root().display()
                ))
            })?;
        self.tools.compile(db, &source).map_err(|e| {
            self.broken(format!(
                "its compiled database {} is gone: {e}",
                db.display()
            ))
        })?;
        tracing::warn!(db = %db.display(), "the live database was deleted: compiled it again from its source");
        Ok(())
    }

    /// Makes the state file describe `db`.
    fn reconcile(&mut self, db: &Path) -> Result<(), OpenError> {
        let is = |r: &Option<DbRecord>| r.as_ref().is_some_and(|r| r.database == db);
        if is(&self.state.live) {
            // As recorded.
        } else if is(&self.state.next) {
            tracing::info!(db = %db.display(), "the last switch completed before the daemon stopped");
            self.state.live = self.state.next.take();
            self.state.running.clear();
        } else {
            let names = self
                .tools
                .longruns(self.live.path())
                .map_err(|e| self.broken(format!("cannot list its services: {e}")))?;
            let services: BTreeMap<VmName, _> = names
                .iter()
                .filter_map(|n| n.parse::<VmName>().ok())
                .map(|n| (n, None))
                .collect();
            tracing::warn!(
                db = %db.display(),
                services = services.len(),
                "the live database is not the one the state file records: adopted it as it is"
            );
            let source = self.store.source_of(db).filter(|s| s.is_dir());
            self.state.live = Some(DbRecord {
                database: db.to_owned(),
                source,
                tree: None,
                services,
            });
            self.state.running.clear();
        }
        self.state.next = None;
        let mut names: Vec<&str> = INTERNAL_SERVICES.to_vec();
        names.extend(self.state.live_services().map(VmName::as_str));
        let missing = self.live.missing_links(names);
        if !missing.is_empty() {
            let why = format!(
                "the scan directory links of {} services were missing ({}); the update restored them",
                missing.len(),
                missing.join(", ")
            );
            tracing::warn!("{why}");
            self.force = Some(why);
        }
        self.save_state();
        Ok(())
    }

    /// Deletes every database, source and work directory except the live
    /// database and its source.
    pub(super) fn collect_garbage(&mut self) {
        let live = self.live.compiled();
        let source = live.as_deref().and_then(|db| self.store.source_of(db));
        let keep: Vec<&Path> = live
            .iter()
            .chain(source.iter())
            .map(PathBuf::as_path)
            .collect();
        for (path, e) in self.store.collect_garbage(&keep) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an old database");
        }
    }

    /// Removes `LIVE:s6-rc-*` directories that `LIVE` does not point to,
    /// left by a killed s6-rc program, while holding the live lock so that
    /// no s6-rc program is building one.
    fn remove_stale_live_dirs(&self) {
        let stale = self.live.stale_dirs();
        if stale.is_empty() {
            return;
        }
        let Some(_lock) = self.live.try_lock() else {
            tracing::info!("the live directory is locked: stale live directories stay for now");
            return;
        };
        for d in self.live.stale_dirs() {
            match remove_any(&d) {
                Ok(()) => tracing::info!(dir = %d.display(), "removed a stale live directory"),
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "cannot remove a stale live directory")
                }
            }
        }
    }
}
