//! The `none` applier: catalog only, for machines without s6-rc.
//!
//! It never touches the host: every apply reports [`Disabled`], no VM has
//! a service and none is restart-pending.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use vm_catalog_protocol::{ApplyOutcome, ApplyStatus};

use super::applier::{Applier, ApplyReport, ApplyRequest};
use super::outcome::{ApplyResult, Detail, Notes};

/// What every apply of `none` does: nothing; `active` VMs are in the
/// catalog only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disabled {
    /// Active VMs.
    pub active: usize,
}

impl Detail for Disabled {
    fn status(&self) -> ApplyStatus {
        ApplyStatus::Disabled
    }

    fn summary(&self, _: &Notes<'_>) -> String {
        format!(
            "applier none: {} active vms are in the catalog only, no services",
            self.active
        )
    }
}

/// Applies nothing.
#[derive(Debug, Default, Clone)]
pub struct NoneApplier;

impl NoneApplier {
    /// The `none` applier.
    pub fn new() -> NoneApplier {
        NoneApplier
    }
}

impl Applier for NoneApplier {
    fn name(&self) -> &'static str {
        "none"
    }

    fn apply(&mut self, request: &ApplyRequest) -> ApplyReport {
        let started = Instant::now();
        let result = ApplyResult::new(Disabled {
            active: request.vms.len(),
        });
        let restart_pending = BTreeSet::new();
        let notes = Notes {
            live: None,
            services: 0,
            pending: &restart_pending,
            left_out: &[],
            state: None,
        };
        let outcome = ApplyOutcome {
            status: result.status(),
            generation: request.generation,
            database: None,
            services: 0,
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            message: result.message(&notes),
        };
        ApplyReport {
            outcome,
            result,
            services: BTreeMap::new(),
            restart_pending,
            left_out: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::applier::ActiveVm;
    use vm_catalog_protocol::ApplyStatus;

    #[test]
    fn none_reports_disabled_and_no_services() {
        let vm = ActiveVm {
            name: "netvm".parse().unwrap(),
            view: "/run/vm/netvm/config".into(),
            providers: vec![],
            fingerprint: 1,
            id: "AAAAAA".parse().unwrap(),
        };
        let report = NoneApplier::new().apply(&ApplyRequest {
            generation: 7,
            vms: vec![vm],
        });
        assert_eq!(report.result, ApplyResult::new(Disabled { active: 1 }));
        assert_eq!(report.outcome.status, ApplyStatus::Disabled);
        assert_eq!(
            report.outcome.message,
            "applier none: 1 active vms are in the catalog only, no services"
        );
        assert_eq!(report.outcome.generation, 7);
        assert_eq!(report.outcome.services, 0);
        assert_eq!(report.outcome.database, None);
        assert!(report.services.is_empty() && report.restart_pending.is_empty());
        assert_eq!(NoneApplier::new().name(), "none");
    }
}
