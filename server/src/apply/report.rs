//! The report stage's log line, shared by the appliers.

use vm_catalog_protocol::{ApplyOutcome, ApplyStatus};

/// Logs an apply's outcome at the level its status calls for.
pub fn log(outcome: &ApplyOutcome) {
    let generation = outcome.generation;
    let status = outcome.status;
    let msg = &outcome.message;
    match status {
        ApplyStatus::Unchanged | ApplyStatus::Disabled => {
            tracing::debug!(generation, status = status.as_str(), "{msg}");
        }
        ApplyStatus::Applied => tracing::info!(generation, status = status.as_str(), "{msg}"),
        ApplyStatus::Invalid | ApplyStatus::FailedBeforeSwitch | ApplyStatus::Repaired => {
            tracing::warn!(generation, status = status.as_str(), "{msg}");
        }
        ApplyStatus::FailedAfterSwitch => {
            tracing::error!(generation, status = status.as_str(), "{msg}");
        }
    }
}
