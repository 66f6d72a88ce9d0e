//! The report stage of the s6-instance applier: the typed outcome and the
//! instances the daemon made become an [`ApplyReport`].

use std::collections::BTreeSet;
use std::time::Duration;

use vm_catalog_protocol::ApplyOutcome;

use super::config::InstanceConfig;
use super::outcome::InstanceOutcome;
use super::state::InstanceState;
use crate::apply::applier::{ApplyReport, ApplyRequest, LeftOut};
use crate::apply::outcome::{ApplyResult, Notes};

/// The report of an apply of `request` that ended with `result`.
pub(super) fn report(
    request: &ApplyRequest,
    result: InstanceOutcome,
    left_out: Vec<LeftOut>,
    state: &InstanceState,
    config: &InstanceConfig,
    state_note: Option<&str>,
    took: Duration,
) -> ApplyReport {
    let active: BTreeSet<_> = request.vms.iter().map(|v| &v.name).collect();
    let services: std::collections::BTreeMap<_, _> = state
        .made
        .iter()
        .filter(|(_, m)| m.confirmed && active.contains(&m.vm))
        .map(|(n, m)| (m.vm.clone(), n.clone().into()))
        .collect();
    let restart_pending: BTreeSet<_> = state
        .running
        .keys()
        .filter_map(|n| state.made.get(n))
        .map(|m| m.vm.clone())
        .filter(|vm| active.contains(vm))
        .collect();
    let notes = Notes {
        live: Some(&config.service),
        services: services.len(),
        pending: &restart_pending,
        left_out: &left_out,
        state: state_note,
    };
    let result = ApplyResult::new(result);
    let outcome = ApplyOutcome {
        status: result.status(),
        generation: request.generation,
        database: Some(config.service.display().to_string()),
        services: u32::try_from(services.len()).unwrap_or(u32::MAX),
        duration_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        message: result.message(&notes),
    };
    crate::apply::report::log(&outcome);
    ApplyReport {
        outcome,
        result,
        services,
        restart_pending,
        left_out,
    }
}
