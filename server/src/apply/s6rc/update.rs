//! One `s6-rc-update`, and what it did: after it, `LIVE/compiled` decides
//! (s6rc.md §3.5), as a [`Switched`] value:
//! - still the old database: the update failed before the switch (a timed
//!   out update included: it was killed), the old database stays live;
//! - the new database, exit 0 (or 1/2: some VM failed to restart) and every
//!   scan-directory link present: clean;
//! - the new database otherwise (exit 111 after the switch removes every link
//!   of the live set, §2.6): damaged, for the repair stage;
//! - anything else: elsewhere.

use std::path::Path;

use vm_catalog_protocol::VmName;

use super::System;
use super::adopt::INTERNAL_SERVICES;
use super::outcome::Cause;
use super::state::DbRecord;
use super::tools::{S6rc, ToolError};

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

/// Runs s6-rc-update to `record` from `old` and reads what it did.
pub(super) fn run_update<T: S6rc>(
    sys: &mut System<T>,
    record: &DbRecord,
    conversions: Option<&Path>,
    old: &Path,
) -> Switched {
    let live = &sys.live;
    let result = sys.tools.update(live.path(), &record.database, conversions);
    let now = live.compiled();
    if now.as_deref() == Some(old) && old != record.database {
        let cause = match result {
            Err(error @ ToolError::TimedOut { .. }) => {
                // Killed at its deadline: say who else works on the live
                // directory (a person's s6-rc holding the lock, typically).
                let others = sys.tools.programs_on(live.path(), sys.store.root());
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
