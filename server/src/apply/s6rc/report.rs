//! Turning what happened into an [`ApplyReport`], and logging it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use vm_catalog_protocol::{ApplyOutcome, ApplyStatus, VmName};

use super::render::{RenderError, Rendered};
use super::state::{DbRecord, Running};
use super::tools::S6rc;
use super::{ApplyReport, ApplyRequest, S6rcApplier};
use crate::apply::LeftOut;

/// `"; restart pending: a, b"`, or nothing.
pub fn pending_note(running: &BTreeMap<VmName, Running>) -> String {
    if running.is_empty() {
        return String::new();
    }
    format!("; restart pending: {}", join(running.keys()))
}

/// `"; left out: a (why), b (why)"`, or nothing.
pub fn left_out_note(left_out: &[LeftOut]) -> String {
    let mut s = String::new();
    for (i, l) in left_out.iter().enumerate() {
        let sep = if i == 0 { "; left out: " } else { ", " };
        let _ = write!(s, "{sep}{} ({})", l.vm, l.message);
    }
    s
}

/// Names joined with ", ".
pub fn join<'a>(names: impl IntoIterator<Item = &'a VmName>) -> String {
    names
        .into_iter()
        .map(VmName::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// `"+2 -1 ~3"`: VMs added, removed and changed from `old` to `new`.
pub fn diff_summary(old: Option<&DbRecord>, new: &DbRecord) -> String {
    let empty = BTreeMap::new();
    let old = old.map_or(&empty, |r| &r.services);
    let added = new
        .services
        .keys()
        .filter(|n| !old.contains_key(*n))
        .count();
    let removed = old
        .keys()
        .filter(|n| !new.services.contains_key(*n))
        .count();
    let changed = new
        .services
        .iter()
        .filter(|(n, d)| old.get(*n).is_some_and(|o| o != *d))
        .count();
    format!("+{added} -{removed} ~{changed}")
}

impl<T: S6rc> S6rcApplier<T> {
    /// The report of an apply that ends with `status`. Everything about
    /// what is live comes from the state, which the caller has updated.
    pub(super) fn finish(
        &mut self,
        request: &ApplyRequest,
        status: ApplyStatus,
        message: String,
        rendered: &Rendered,
        t0: Instant,
    ) -> ApplyReport {
        self.timings.total = t0.elapsed();
        let count = rendered.tree.services.len();
        self.report(
            request,
            status,
            message,
            count,
            rendered.left_out.clone(),
            t0,
        )
    }

    /// The report of an apply refused before rendering anything.
    pub(super) fn refuse(
        &mut self,
        request: &ApplyRequest,
        e: &RenderError,
        t0: Instant,
    ) -> ApplyReport {
        self.timings.total = t0.elapsed();
        let RenderError::TooManyServices { count, .. } = e;
        let message = format!(
            "{e} (max_services; s6-svscan's -c must allow them too): nothing was compiled, the \
             previous database stays live"
        );
        self.report(
            request,
            ApplyStatus::Invalid,
            message,
            *count,
            Vec::new(),
            t0,
        )
    }

    fn report(
        &mut self,
        request: &ApplyRequest,
        status: ApplyStatus,
        message: String,
        count: usize,
        left_out: Vec<LeftOut>,
        t0: Instant,
    ) -> ApplyReport {
        let database = self.live.compiled().map(|p| p.display().to_string());
        let outcome = ApplyOutcome {
            status,
            generation: request.generation,
            database,
            services: u32::try_from(count).unwrap_or(u32::MAX),
            duration_us: u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX),
            message,
        };
        let generation = request.generation;
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
        let services = self
            .state
            .live_services()
            .map(|n| (n.clone(), n.as_str().to_owned()))
            .collect();
        ApplyReport {
            outcome,
            services,
            restart_pending: self.state.running.keys().cloned().collect(),
            left_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_catalog_protocol::DiagCode;

    fn n(s: &str) -> VmName {
        s.parse().unwrap()
    }

    #[test]
    fn notes_read_well() {
        let l = [
            LeftOut {
                vm: n("a"),
                code: DiagCode::InvalidName,
                message: "x".into(),
            },
            LeftOut {
                vm: n("b"),
                code: DiagCode::ProviderUnavailable,
                message: "y".into(),
            },
        ];
        assert_eq!(left_out_note(&l), "; left out: a (x), b (y)");
        assert_eq!(left_out_note(&[]), "");
        assert_eq!(pending_note(&BTreeMap::new()), "");
    }

    #[test]
    fn diff_counts_added_removed_changed() {
        let rec = |s: &[(&str, u8)]| DbRecord {
            database: "/db".into(),
            source: None,
            tree: None,
            services: s
                .iter()
                .map(|(name, d)| {
                    let mut h = super::super::fingerprint::Hasher::new("t");
                    h.u64(u64::from(*d));
                    (n(name), Some(h.finish()))
                })
                .collect(),
        };
        let old = rec(&[("a", 1), ("b", 1), ("c", 1)]);
        let new = rec(&[("a", 1), ("b", 2), ("d", 1)]);
        assert_eq!(diff_summary(Some(&old), &new), "+1 -1 ~1");
        assert_eq!(diff_summary(None, &new), "+3 -0 ~0");
    }
}
