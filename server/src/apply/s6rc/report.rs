//! The report stage: the typed outcome and what is live afterwards become
//! an [`ApplyReport`], and a log line.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use vm_catalog_protocol::ApplyOutcome;

use super::Shown;
use super::outcome::S6rcOutcome;
use super::state::S6rcState;
use crate::apply::applier::{ApplyReport, ApplyRequest};
use crate::apply::outcome::{ApplyResult, Notes};

/// The report of an apply of `request` that ended with `result`. What is
/// live comes from `state`, which the stages have updated, and `database`
/// (`LIVE/compiled`).
pub(super) fn report(
    request: &ApplyRequest,
    result: S6rcOutcome,
    shown: Shown,
    state: &S6rcState,
    database: Option<&Path>,
    state_note: Option<&str>,
    took: Duration,
) -> ApplyReport {
    let restart_pending: BTreeSet<_> = state.running.keys().cloned().collect();
    let notes = Notes {
        live: database,
        services: shown.services,
        pending: &restart_pending,
        left_out: &shown.left_out,
        state: state_note,
    };
    let result = ApplyResult::new(result);
    let status = result.status();
    let outcome = ApplyOutcome {
        status,
        generation: request.generation,
        database: database.map(|p| p.display().to_string()),
        services: u32::try_from(shown.services).unwrap_or(u32::MAX),
        duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        message: result.message(&notes),
    };
    crate::apply::report::log(&outcome);
    let services = state
        .live_services()
        .map(|n| (n.clone(), n.clone().into()))
        .collect();
    ApplyReport {
        outcome,
        result,
        services,
        restart_pending,
        left_out: shown.left_out,
    }
}
