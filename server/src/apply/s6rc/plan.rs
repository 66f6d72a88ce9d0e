//! The plan stage of the s6-rc applier: the request rendered into a source
//! tree in memory, fingerprinted, and compared with the record of what is
//! live ([`Delta`]). Nothing is written; the only look at the host is the
//! scan-directory check each name gets (`conflict`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use vm_catalog_protocol::VmName;

use super::outcome::Refusal;
use super::render::{RenderError, Rendered, Renderer};
use super::state::S6rcState;
use crate::apply::applier::ApplyRequest;
use crate::apply::plan::Delta;

/// A rendered request and what it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// The tree, and the VMs left out of it.
    pub rendered: Rendered,
    /// Against the live record.
    pub plan: Delta,
    /// The tree is the live one: same fingerprint, and `LIVE/compiled` is
    /// the database recorded for it.
    pub live: bool,
}

/// Renders `request`. A name in the live database is never a conflict (its
/// link is ours); any other is checked with `conflict`. `compiled` is what
/// `LIVE/compiled` says.
pub fn plan(
    renderer: &Renderer,
    request: &ApplyRequest,
    state: &S6rcState,
    compiled: Option<&Path>,
    conflict: &mut dyn FnMut(&VmName) -> Option<String>,
) -> Result<Planned, Refusal> {
    let live_set: BTreeSet<&VmName> = state.live_services().collect();
    let mut check = |n: &VmName| {
        if live_set.contains(n) {
            None
        } else {
            conflict(n)
        }
    };
    let rendered = renderer.render(&request.vms, &mut check).map_err(refusal)?;
    let empty = BTreeMap::new();
    let live_defs = state.live.as_ref().map_or(&empty, |r| &r.services);
    let plan = Delta::between(live_defs, &rendered.tree.definitions());
    let live = state.live.as_ref().is_some_and(|rec| {
        rec.tree == Some(rendered.tree.fingerprint) && compiled == Some(rec.database.as_path())
    });
    Ok(Planned {
        rendered,
        plan,
        live,
    })
}

/// The refusal a render error is.
pub fn refusal(e: RenderError) -> Refusal {
    match e {
        RenderError::TooManyServices { count, max } => Refusal::TooManyServices { count, max },
    }
}
