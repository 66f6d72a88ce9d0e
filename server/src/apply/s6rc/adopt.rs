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
use std::path::{Path, PathBuf};

use vm_catalog_protocol::VmName;

use super::cleanup;
use super::live::LiveState;
use super::outcome::Forced;
use super::quiet;
use super::state::{DbRecord, S6rcState};
use super::tools::S6rc;
use super::{Memory, System};

/// s6-rc's own longruns in every compiled database.
pub const INTERNAL_SERVICES: [&str; 2] = ["s6rc-oneshot-runner", "s6rc-fdholder"];

/// Adopts the live directory, once nobody else works on it, or as far as is
/// safe after waiting `bound`. `Err` is what is wrong with the live
/// directory. `before` says what waits, for the log.
pub(super) fn adopt<T: S6rc>(
    host: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
    bound: std::time::Duration,
    before: &str,
) -> Result<(), String> {
    let root = host.store.root().to_owned();
    match quiet::wait(&mut host.tools, &host.live, &root, bound, before) {
        Ok(lock) => {
            let adopted = adopt_quiet(host, memory, prefix);
            drop(lock);
            memory.unsettled = None;
            adopted
        }
        Err(busy) => {
            let adopted = adopt_busy(host, memory, prefix);
            memory.unsettled = Some(busy);
            adopted
        }
    }
}

/// Adopts while holding the live lock (or with no live directory), and
/// cleans up.
fn adopt_quiet<T: S6rc>(
    host: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
) -> Result<(), String> {
    let db = match host.live.state() {
        LiveState::Present(db) => db,
        LiveState::Absent if host.live.siblings().is_empty() => {
            // Nothing is live (a fresh boot): the first apply inits.
            if memory.state.live.is_some() || memory.state.next.is_some() {
                tracing::info!("no live directory: forgetting the previous boot's database");
            }
            memory.state = S6rcState::new();
            memory.save(&host.store);
            cleanup::collect_garbage_locked(&host.live, &host.store);
            return Ok(());
        }
        LiveState::Broken(why) if !live_is_lost(host.live.path()) => return Err(why),
        LiveState::Absent | LiveState::Broken(_) => relink_lost_live(host, memory)?,
    };
    check_prefix(host, prefix)?;
    if !db.is_dir() {
        recompile_live(host, &db)?;
    }
    reconcile(host, memory, &db, true)?;
    cleanup::collect_garbage_locked(&host.live, &host.store);
    cleanup::sweep_supervisors(&mut host.tools, &host.live);
    cleanup::remove_stale_live_dirs(&mut host.tools, &host.live);
    Ok(())
}

/// Adopts what `LIVE/compiled` says while others still work on it:
/// nothing is moved, compiled or deleted, and the database an update may
/// still switch to stays recorded.
fn adopt_busy<T: S6rc>(
    host: &mut System<T>,
    memory: &mut Memory,
    prefix: &str,
) -> Result<(), String> {
    if let LiveState::Present(db) = host.live.state() {
        check_prefix(host, prefix)?;
        if db.is_dir() {
            reconcile(host, memory, &db, false)?;
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
fn relink_lost_live<T: S6rc>(host: &System<T>, memory: &Memory) -> Result<PathBuf, String> {
    let usable: Vec<(PathBuf, PathBuf)> = host
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
                let list: Vec<String> = usable
                    .iter()
                    .map(|(d, _)| d.display().to_string())
                    .collect();
                return Err(format!(
                    "it is missing or dangling, and {} live directories next to it have a \
                     usable database ({}): point it at the one its supervisors use \
                     (ln -sfn DIR {})",
                    usable.len(),
                    list.join(", "),
                    host.live.path().display()
                ));
            }
        },
    };
    host.live
        .relink(&chosen.0)
        .map_err(|e| format!("cannot point it at {}: {e}", chosen.0.display()))?;
    tracing::warn!(
        live = %host.live.path().display(),
        target = %chosen.0.display(),
        "the live directory link was lost: pointed it back at the only usable live directory"
    );
    Ok(chosen.1)
}

fn check_prefix<T: S6rc>(host: &System<T>, prefix: &str) -> Result<(), String> {
    let recorded = host
        .live
        .recorded_prefix()
        .map_err(|e| format!("cannot read its prefix: {e}"))?;
    if recorded != prefix {
        return Err(format!(
            "it was created with prefix {recorded:?} but the configuration says {prefix:?}, and \
             s6-rc-update cannot change a prefix: configure {recorded:?}, or stop its \
             services and remove it (a reboot does)"
        ));
    }
    Ok(())
}

/// The live database was deleted: compile its source again to the same
/// path (compilation is deterministic).
fn recompile_live<T: S6rc>(host: &mut System<T>, db: &Path) -> Result<(), String> {
    let source = host
        .store
        .source_of(db)
        .filter(|s| s.is_dir())
        .ok_or_else(|| {
            format!(
                "its compiled database {} is gone and its source is not in {}: every s6-rc \
                 command on it fails until the database is restored",
                db.display(),
                host.store.root().display()
            )
        })?;
    host.tools
        .compile(db, &source)
        .map_err(|e| format!("its compiled database {} is gone: {e}", db.display()))?;
    tracing::warn!(db = %db.display(), "the live database was deleted: compiled it again from its source");
    Ok(())
}

/// Makes the state file describe `db`. `settled`: no update may still
/// switch elsewhere, so the record of one is dropped, and missing links
/// mean something.
fn reconcile<T: S6rc>(
    host: &mut System<T>,
    memory: &mut Memory,
    db: &Path,
    settled: bool,
) -> Result<(), String> {
    let state = &mut memory.state;
    let is = |r: &Option<DbRecord>| r.as_ref().is_some_and(|r| r.database == db);
    if is(&state.live) {
        // As recorded.
    } else if is(&state.next) {
        tracing::info!(db = %db.display(), "the last switch completed before the daemon stopped");
        state.live = state.next.take();
        state.running.clear();
    } else {
        let names = host
            .tools
            .longruns(host.live.path())
            .map_err(|e| format!("cannot list its services: {e}"))?;
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
        let source = host.store.source_of(db).filter(|s| s.is_dir());
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
        let missing = host.live.missing_links(names);
        if !missing.is_empty() {
            let forced = Forced::LinksMissing(missing);
            tracing::warn!("{forced}");
            memory.force = Some(forced);
        }
    }
    memory.save(&host.store);
    Ok(())
}

/// The state for a live database `db` the applier did not expect: `record`
/// if that is it, else what s6-rc-db lists.
pub(super) fn adopt_unknown<T: S6rc>(
    host: &mut System<T>,
    memory: &mut Memory,
    db: &Path,
    record: DbRecord,
) {
    let state = &mut memory.state;
    if record.database == db {
        state.live = Some(record);
    } else {
        let services = match host.tools.longruns(host.live.path()) {
            Ok(names) => names
                .iter()
                .filter_map(|n| n.parse().ok())
                .map(|n| (n, None))
                .collect(),
            Err(_) => BTreeMap::new(),
        };
        let source = host.store.source_of(db).filter(|s| s.is_dir());
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
pub(super) fn adopt_current<T: S6rc>(host: &mut System<T>, memory: &mut Memory) {
    let state = &mut memory.state;
    let Some(db) = host.live.compiled() else {
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
            adopt_unknown(host, memory, &db, placeholder);
        }
    }
}
