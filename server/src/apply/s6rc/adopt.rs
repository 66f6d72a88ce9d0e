//! Start-up: wait until nobody works on the live directory, adopt what is
//! live, reconcile the state file, clean up.
//!
//! Before anything is adopted or deleted, the applier waits (bounded by
//! `timeout`, and logged) until no s6-rc program works on the live directory
//! and its lock is free ([`super::quiet`]): an update whose daemon was
//! killed may still be switching. If the wait runs out, the applier adopts
//! what `LIVE/compiled` says, keeps the database that update may switch to,
//! deletes nothing, and looks again before each apply (which fails `Busy`
//! until then).
//!
//! s6-rc-init is never run over an existing live directory (0.5.4.1 breaks
//! it, s6rc.md §1.2): when `LIVE` exists, the applier takes it as it is and
//! updates from it. When `LIVE` is missing or dangling but one
//! `LIVE:s6-rc-*` directory next to it still has a usable database, `LIVE`
//! is pointed back at it (§3.6). When the live database itself was deleted,
//! its source is compiled again to the same path (§1.4). When the state file
//! does not describe the live database, the VMs are read from `s6-rc-db` and
//! the next apply updates even if nothing changed. Missing scan-directory
//! links also force that update, which restores them (§2.6). Supervisors of
//! deleted live directories are stopped, and stale live directories
//! without supervisors removed ([`super::cleanup`]).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::VmName;

use super::cleanup;
use super::live::LiveState;
use super::outcome::Forced;
use super::quiet;
use super::state::{DbRecord, S6rcState};
use super::tools::{S6rc, ToolError};
use super::{Memory, System};

/// Why the live directory cannot be adopted (the message says what to do).
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// The live directory is there but unusable.
    #[error("{0}")]
    Broken(String),
    /// `LIVE` is lost and several live directories next to it could be it.
    #[error(
        "it is missing or dangling, and {} live directories next to it have a usable database \
         ({}): point it at the one its supervisors use (ln -sfn DIR {})",
        .candidates.len(),
        list(.candidates),
        .live.display()
    )]
    Ambiguous {
        /// The live directory link.
        live: PathBuf,
        /// The live directories with a usable database.
        candidates: Vec<PathBuf>,
    },
    /// `LIVE` could not be pointed back at its directory.
    #[error("cannot point it at {}: {error}", .target.display())]
    Relink {
        /// The directory.
        target: PathBuf,
        /// Why.
        error: io::Error,
    },
    /// Its prefix cannot be read.
    #[error("cannot read its prefix: {0}")]
    PrefixUnreadable(io::Error),
    /// It was made with another prefix.
    #[error(
        "it was created with prefix {recorded:?} but the configuration says {configured:?}, and \
         s6-rc-update cannot change a prefix: configure {recorded:?}, or stop its services and \
         remove it (a reboot does)"
    )]
    PrefixDiffers {
        /// Its prefix.
        recorded: String,
        /// The configured one.
        configured: String,
    },
    /// The live database is gone and its source with it.
    #[error(
        "its compiled database {} is gone and its source is not in {}: every s6-rc command on \
         it fails until the database is restored",
        .db.display(),
        .store.display()
    )]
    SourceGone {
        /// The database.
        db: PathBuf,
        /// The state directory.
        store: PathBuf,
    },
    /// The live database is gone and compiling it again failed.
    #[error("its compiled database {} is gone: {error}", .db.display())]
    Recompile {
        /// The database.
        db: PathBuf,
        /// Why.
        error: ToolError,
    },
    /// Its services cannot be listed.
    #[error("cannot list its services: {0}")]
    Services(ToolError),
}

fn list(dirs: &[PathBuf]) -> String {
    let shown: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    shown.join(", ")
}

/// s6-rc's own longruns in every compiled database.
pub const INTERNAL_SERVICES: [&str; 2] = ["s6rc-oneshot-runner", "s6rc-fdholder"];

/// Adopts the live directory, once nobody else works on it, or as far as is
/// safe after waiting `bound`. `Err` is what is wrong with the live
/// directory. `before` says what waits, for the log.
pub(super) fn adopt<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
    bound: std::time::Duration,
    before: &str,
) -> Result<(), AdoptError> {
    let root = sys.store.root().to_owned();
    match quiet::wait(&mut sys.tools, &sys.live, &root, bound, before) {
        Ok(lock) => {
            let adopted = adopt_quiet(sys, memory, prefix);
            drop(lock);
            memory.unsettled = None;
            adopted
        }
        Err(busy) => {
            let adopted = adopt_busy(sys, memory, prefix);
            memory.unsettled = Some(busy);
            adopted
        }
    }
}

/// Adopts while holding the live lock (or with no live directory), and
/// cleans up.
fn adopt_quiet<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
) -> Result<(), AdoptError> {
    let db = match sys.live.state() {
        LiveState::Present(db) => db,
        LiveState::Absent if sys.live.siblings().is_empty() => {
            // Nothing is live (a fresh boot): the first apply inits.
            if memory.state.live.is_some() || memory.state.next.is_some() {
                tracing::info!("no live directory: forgetting the previous boot's database");
            }
            memory.state = S6rcState::new();
            memory.save(&sys.store);
            cleanup::collect_garbage_locked(&sys.live, &sys.store);
            return Ok(());
        }
        LiveState::Broken(why) if !live_is_lost(sys.live.path()) => {
            return Err(AdoptError::Broken(why));
        }
        LiveState::Absent | LiveState::Broken(_) => relink_lost_live(sys, memory)?,
    };
    check_prefix(sys, prefix)?;
    if !db.is_dir() {
        recompile_live(sys, &db)?;
    }
    reconcile(sys, memory, &db, true)?;
    cleanup::collect_garbage_locked(&sys.live, &sys.store);
    cleanup::sweep_supervisors(&mut sys.tools, &sys.live);
    cleanup::remove_stale_live_dirs(&mut sys.tools, &sys.live);
    Ok(())
}

/// Adopts what `LIVE/compiled` says while others still work on it:
/// nothing is moved, compiled or deleted, and the database an update may
/// still switch to stays recorded.
fn adopt_busy<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
) -> Result<(), AdoptError> {
    if let LiveState::Present(db) = sys.live.state() {
        check_prefix(sys, prefix)?;
        if db.is_dir() {
            reconcile(sys, memory, &db, false)?;
        }
    }
    Ok(())
}

/// `LIVE` is missing or a dangling symlink.
fn live_is_lost(p: &Path) -> bool {
    fs::symlink_metadata(p).is_err()
        || (fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
            && fs::metadata(p).is_err())
}

/// Points `LIVE` at the one `LIVE:s6-rc-*` directory with a usable
/// database.
fn relink_lost_live<T: S6rc>(sys: &System<T>, memory: &Memory) -> Result<PathBuf, AdoptError> {
    let usable: Vec<(PathBuf, PathBuf)> = sys
        .live
        .siblings()
        .into_iter()
        .filter_map(|d| {
            let db = fs::read_link(d.join("compiled")).ok()?;
            db.is_dir().then_some((d, db))
        })
        .collect();
    let known = |db: &Path| {
        [&memory.state.live, &memory.state.next]
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
                return Err(AdoptError::Ambiguous {
                    live: sys.live.path().to_owned(),
                    candidates: usable.iter().map(|(d, _)| d.clone()).collect(),
                });
            }
        },
    };
    sys.live
        .relink(&chosen.0)
        .map_err(|error| AdoptError::Relink {
            target: chosen.0.clone(),
            error,
        })?;
    tracing::warn!(
        live = %sys.live.path().display(),
        target = %chosen.0.display(),
        "the live directory link was lost: pointed it back at the only usable live directory"
    );
    Ok(chosen.1)
}

fn check_prefix<T: S6rc>(sys: &System<T>, prefix: &str) -> Result<(), AdoptError> {
    let recorded = sys
        .live
        .recorded_prefix()
        .map_err(AdoptError::PrefixUnreadable)?;
    if recorded != prefix {
        return Err(AdoptError::PrefixDiffers {
            recorded,
            configured: prefix.to_owned(),
        });
    }
    Ok(())
}

/// The live database was deleted: compile its source again to the same
/// path (compilation is deterministic).
fn recompile_live<T: S6rc>(sys: &mut System<T>, db: &Path) -> Result<(), AdoptError> {
    let source = sys
        .store
        .source_of(db)
        .filter(|s| s.is_dir())
        .ok_or_else(|| AdoptError::SourceGone {
            db: db.to_owned(),
            store: sys.store.root().to_owned(),
        })?;
    sys.tools
        .compile(db, &source)
        .map_err(|error| AdoptError::Recompile {
            db: db.to_owned(),
            error,
        })?;
    tracing::warn!(db = %db.display(), "the live database was deleted: compiled it again from its source");
    Ok(())
}

/// Makes the state file describe `db`. `settled`: no update may still
/// switch elsewhere, so the record of one is dropped, and missing links
/// mean something.
fn reconcile<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    db: &Path,
    settled: bool,
) -> Result<(), AdoptError> {
    let state = &mut memory.state;
    let is = |r: &Option<DbRecord>| r.as_ref().is_some_and(|r| r.database == db);
    if is(&state.live) {
        // As recorded.
    } else if is(&state.next) {
        tracing::info!(db = %db.display(), "the last switch completed before the daemon stopped");
        state.live = state.next.take();
        state.running.clear();
    } else {
        let names = sys
            .tools
            .longruns(sys.live.path())
            .map_err(AdoptError::Services)?;
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
        let source = sys.store.source_of(db).filter(|s| s.is_dir());
        state.live = Some(DbRecord {
            database: db.to_owned(),
            source,
            tree: None,
            services,
        });
        state.running.clear();
    }
    if settled {
        state.next = None;
        let mut names: Vec<&str> = INTERNAL_SERVICES.to_vec();
        names.extend(state.live_services().map(VmName::as_str));
        let missing = sys.live.missing_links(names);
        if !missing.is_empty() {
            let forced = Forced::LinksMissing(missing);
            tracing::warn!("{forced}");
            memory.force = Some(forced);
        }
    }
    memory.save(&sys.store);
    Ok(())
}

/// The state for a live database `db` the applier did not expect: `record`
/// if that is it, else what s6-rc-db lists.
pub(super) fn adopt_unknown<T: S6rc>(
    sys: &mut System<T>,
    memory: &mut Memory,
    db: &Path,
    record: DbRecord,
) {
    let state = &mut memory.state;
    if record.database == db {
        state.live = Some(record);
    } else {
        let services = match sys.tools.longruns(sys.live.path()) {
            Ok(names) => names
                .iter()
                .filter_map(|n| n.parse().ok())
                .map(|n| (n, None))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let source = sys.store.source_of(db).filter(|s| s.is_dir());
        state.live = Some(DbRecord {
            database: db.to_owned(),
            source,
            tree: None,
            services,
        });
    }
    state.next = None;
    state.running.clear();
}

/// Whatever `LIVE/compiled` points to now becomes the recorded live
/// database.
pub(super) fn adopt_current<T: S6rc>(sys: &mut System<T>, memory: &mut Memory) {
    let state = &mut memory.state;
    let Some(db) = sys.live.compiled() else {
        state.live = None;
        state.next = None;
        return;
    };
    let known = [state.live.clone(), state.next.clone()]
        .into_iter()
        .flatten()
        .find(|r| r.database == db);
    match known {
        Some(r) => {
            state.live = Some(r);
            state.next = None;
        }
        None => {
            let placeholder = DbRecord {
                database: PathBuf::new(),
                source: None,
                tree: None,
                services: BTreeMap::new(),
            };
            adopt_unknown(sys, memory, &db, placeholder);
        }
    }
}
