//! The report stage's shared vocabulary: an applier's own account of one
//! apply (a [`Detail`]: the s6-rc applier's in `s6rc/outcome.rs`, the
//! s6-instance applier's in `instance/outcome.rs`, `none`'s in `none.rs`),
//! held as an [`ApplyResult`], and the [`Notes`] that every message ends
//! with. The wire [`ApplyOutcome`](vm_catalog_protocol::ApplyOutcome) — its
//! status and its message — is derived from them, so that tests and callers
//! look at values, not at text.

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt::{self, Write};
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{ApplyStatus, VmName};

use super::applier::LeftOut;

/// One applier's typed account of an apply.
pub trait Detail: fmt::Debug + Send + Sync + Any + SameDetail {
    /// The wire status.
    fn status(&self) -> ApplyStatus;

    /// The message's first part: what happened. [`Notes::live_note`] says
    /// what stays live after a failure.
    fn summary(&self, notes: &Notes<'_>) -> String;
}

/// Equality between details of any type (different types differ).
pub trait SameDetail {
    /// Whether `other` is a detail of this type, equal to this one.
    fn same(&self, other: &dyn Any) -> bool;
}

impl<T: PartialEq + 'static> SameDetail for T {
    fn same(&self, other: &dyn Any) -> bool {
        other.downcast_ref::<T>() == Some(self)
    }
}

/// What one apply did, as its applier tells it.
#[derive(Debug, Clone)]
pub struct ApplyResult(Arc<dyn Detail>);

impl ApplyResult {
    /// The result `detail` tells.
    pub fn new(detail: impl Detail) -> ApplyResult {
        ApplyResult(Arc::new(detail))
    }

    /// The wire status.
    pub fn status(&self) -> ApplyStatus {
        self.0.status()
    }

    /// The applier's own account, when it is a `D`.
    pub fn detail<D: Detail>(&self) -> Option<&D> {
        let any: &dyn Any = self.0.as_ref();
        any.downcast_ref()
    }

    /// The message of the wire outcome: the applier's summary, then
    /// `notes`.
    pub fn message(&self, notes: &Notes<'_>) -> String {
        let mut m = self.0.summary(notes);
        if !notes.pending.is_empty() {
            let _ = write!(m, "; restart pending: {}", join(notes.pending.iter()));
        }
        for (i, l) in notes.left_out.iter().enumerate() {
            let sep = if i == 0 { "; left out: " } else { ", " };
            let _ = write!(m, "{sep}{} ({})", l.vm, l.message);
        }
        if let Some(state) = notes.state {
            let _ = write!(m, "; state: {state}");
        }
        m
    }
}

impl PartialEq for ApplyResult {
    fn eq(&self, other: &ApplyResult) -> bool {
        let other: &dyn Any = other.0.as_ref();
        self.0.same(other)
    }
}

impl Eq for ApplyResult {}

/// What the message says besides the applier's summary.
#[derive(Debug, Clone, Copy)]
pub struct Notes<'a> {
    /// What is live after the apply.
    pub live: Option<&'a Path>,
    /// Services in the rendered set.
    pub services: usize,
    /// Restart-pending VMs.
    pub pending: &'a BTreeSet<VmName>,
    /// VMs left out.
    pub left_out: &'a [LeftOut],
    /// What was wrong with the applier's state file when it was read, and
    /// what was recovered (said once, in the first report after it).
    pub state: Option<&'a str>,
}

impl Notes<'_> {
    /// `; LIVE stays live` (or `; nothing is live`), for a failure that
    /// changed nothing.
    pub fn live_note(&self) -> String {
        match self.live {
            Some(db) => format!("; {} stays live", db.display()),
            None => "; nothing is live".into(),
        }
    }
}

/// Names joined with ", ".
pub fn join<'a, T: fmt::Display + 'a>(names: impl Iterator<Item = &'a T>) -> String {
    names.map(T::to_string).collect::<Vec<_>>().join(", ")
}
