//! One name, one VM (DESIGN §3): which candidate claims each name, which are
//! shadowed, and (through [`super::providers`]) which claimants are
//! rejected because of their providers; then each candidate's entry.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{
    DiagCode, Diagnostic, Provider, SourceEntry, SourceLabel, VmEntry, VmId, VmName, VmState,
};

use super::providers::{Index, Outside, resolve_providers};
use super::{Candidate, MergeOptions, claim};
use crate::definition::{Definition, display_path};

/// A candidate before resolution.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub def: Arc<Definition>,
    /// Its catalog name (the directory's name, or qualified by its source).
    pub name: VmName,
    pub id: VmId,
    pub source: SourceLabel,
    pub precedence: u32,
    /// Its source went away: kept from the previous catalog.
    pub unavailable: bool,
}

impl Raw {
    /// The candidate `c` before resolution.
    pub(crate) fn of(c: &Candidate) -> Raw {
        Raw {
            def: c.definition.clone(),
            name: c.entry.name.clone(),
            id: c.id.clone(),
            source: c.entry.source.clone(),
            precedence: c.precedence,
            unavailable: c.entry.state == VmState::Unavailable,
        }
    }
}

impl claim::Claims for Raw {
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn source(&self) -> &SourceLabel {
        &self.source
    }
    /// Before resolution, every available definition may claim its name.
    fn may_claim(&self) -> bool {
        !self.unavailable
    }
}

/// What is known about the live state, to be shown on active entries: the
/// catalog's own words for what the applier reported (the rescan's commit
/// translates the report, `rescan::handoff`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Annotations {
    /// Each active VM's service, as the applier names it.
    pub services: BTreeMap<VmName, String>,
    /// Active VMs whose running service predates their definition.
    pub restart_pending: BTreeSet<VmName>,
    /// Active VMs the applier left out of the database: (code, message).
    pub left_out: BTreeMap<VmName, Vec<(DiagCode, String)>>,
    /// Warnings on active VMs from outside the rescan (a UI VM's listener
    /// refused): (code, message).
    pub warnings: BTreeMap<VmName, Vec<(DiagCode, String)>>,
}

impl Annotations {
    /// The names whose notes differ between `self` and `other`.
    pub(super) fn differences(&self, other: &Annotations) -> BTreeSet<VmName> {
        fn of<'a, V: PartialEq>(
            a: &'a BTreeMap<VmName, V>,
            b: &'a BTreeMap<VmName, V>,
            out: &mut BTreeSet<VmName>,
        ) {
            for (k, v) in a {
                if b.get(k) != Some(v) {
                    out.insert(k.clone());
                }
            }
            for k in b.keys() {
                if !a.contains_key(k) {
                    out.insert(k.clone());
                }
            }
        }
        let mut out = BTreeSet::new();
        of(&self.services, &other.services, &mut out);
        of(&self.left_out, &other.left_out, &mut out);
        of(&self.warnings, &other.warnings, &mut out);
        out.extend(
            self.restart_pending
                .symmetric_difference(&other.restart_pending)
                .cloned(),
        );
        out
    }
}

pub(super) fn err(code: DiagCode, path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        code,
        severity: vm_catalog_protocol::Severity::Error,
        path: display_path(path),
        message,
    }
}

fn warn(code: DiagCode, path: &Path, message: String) -> Diagnostic {
    Diagnostic {
        code,
        severity: vm_catalog_protocol::Severity::Warning,
        path: display_path(path),
        message,
    }
}

/// What became of one candidate.
pub(super) struct Outcome {
    pub state: VmState,
    pub shadowed_by: Option<SourceLabel>,
    pub extra: Vec<Diagnostic>,
}

/// What becomes of `raw` before its providers are looked at: unavailable,
/// shadowed by `claimant`, or (`claims`) the claimant, rejected if it is
/// invalid or `forced` rejects it.
fn outcome(
    raw: &Raw,
    claimant: Option<&Raw>,
    claims: bool,
    forced: &BTreeMap<VmName, Vec<Diagnostic>>,
    has_label: impl Fn(&SourceLabel) -> bool,
) -> Outcome {
    let mut o = Outcome {
        state: VmState::Active,
        shadowed_by: None,
        extra: Vec::new(),
    };
    if raw.unavailable {
        o.state = VmState::Unavailable;
        o.extra.push(warn(
            DiagCode::SourceUnavailable,
            &raw.def.dir,
            format!("source {} went away", raw.source),
        ));
    } else if let (false, Some(winner)) = (claims, claimant) {
        o.state = VmState::Shadowed;
        o.shadowed_by = Some(winner.source.clone());
        o.extra.push(warn(
            DiagCode::Shadowed,
            &raw.def.dir,
            format!(
                "shadowed by {} from source {}",
                display_path(&winner.def.dir),
                winner.source
            ),
        ));
    } else {
        if let Some((label, dir)) =
            claim::reads_as_other(&raw.name, &raw.source, &raw.def.name, has_label)
        {
            o.state = VmState::Rejected;
            o.extra.push(err(
                DiagCode::NameReadsAsReference,
                &raw.def.dir,
                format!(
                    "the name {} reads as {dir} of source {label}: rename the directory",
                    raw.name
                ),
            ));
        }
        if let Some(ds) = forced.get(&raw.name) {
            o.extra.extend(ds.iter().cloned());
        }
        if !raw.def.is_valid() || forced.contains_key(&raw.name) {
            o.state = VmState::Rejected;
        }
    }
    o
}

/// Resolves `raws` (sorted by name, then precedence) from `sources` into
/// candidates.
///
/// `forced` rejects claimants from outside (a view that could not be built,
/// …), before provider resolution, so their dependants are rejected too.
///
/// With `outside`, `raws` are the definitions of some names only: a
/// reference to any other name is resolved against `outside`'s candidates,
/// as they are (see [`Outside`]).
pub(crate) fn resolve(
    raws: &[Raw],
    sources: &[SourceEntry],
    (forced, notes): (&BTreeMap<VmName, Vec<Diagnostic>>, &Annotations),
    opts: &MergeOptions,
    outside: Option<Outside<'_>>,
) -> Vec<Candidate> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(raws.len());
    let has_label = |l: &SourceLabel| sources.iter().any(|s| &s.label == l);
    let mut start = 0;
    while start < raws.len() {
        let same = claim::range_of(&raws[start..], raws[start].name.as_str());
        let group = &raws[start..start + same.end];
        let claimant = claim::claimant(group);
        for (k, raw) in group.iter().enumerate() {
            outcomes.push(outcome(
                raw,
                claimant.map(|c| &group[c]),
                claimant == Some(k),
                forced,
                has_label,
            ));
        }
        start += same.end;
    }
    let idx = Index::new(raws, sources, opts, outside);
    let mut resolved = resolve_providers(&idx, &mut outcomes);
    raws.iter()
        .zip(outcomes)
        .enumerate()
        .map(|(i, (raw, o))| build(raw, o, resolved.remove(&i), opts, notes))
        .collect()
}

/// Its providers as the entry lists them: each reference's catalog name
/// where it resolved to a claimant, as written otherwise.
fn entry_providers(def: &Definition, resolved: Option<Vec<Option<VmName>>>) -> Vec<Provider> {
    let resolved = resolved.unwrap_or_default();
    def.providers
        .iter()
        .enumerate()
        .map(|(k, p)| Provider {
            kind: p.provider.kind,
            name: resolved
                .get(k)
                .cloned()
                .flatten()
                .unwrap_or_else(|| p.provider.name.clone()),
        })
        .collect()
}

fn build(
    raw: &Raw,
    o: Outcome,
    resolved: Option<Vec<Option<VmName>>>,
    opts: &MergeOptions,
    notes: &Annotations,
) -> Candidate {
    let def = &raw.def;
    let name = &raw.name;
    let active = o.state == VmState::Active;
    let view = active.then(|| opts.layout.view_path(&opts.vm_dir, name, &raw.id));
    let mut diagnostics = def.diagnostics.clone();
    diagnostics.extend(o.extra);
    if active {
        for (code, message) in notes.left_out.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            diagnostics.push(err(
                *code,
                &def.dir,
                format!("not in the VM database: {message}"),
            ));
        }
        for (code, message) in notes.warnings.get(name).map(Vec::as_slice).unwrap_or(&[]) {
            diagnostics.push(warn(*code, &def.dir, message.clone()));
        }
    }
    let entry = Arc::new(VmEntry {
        name: name.clone(),
        source: raw.source.clone(),
        state: o.state,
        path: display_path(&def.dir),
        view: view.as_deref().map(display_path),
        service: if active {
            notes.services.get(name).cloned()
        } else {
            None
        },
        providers: entry_providers(def, resolved),
        diagnostics,
        restart_pending: active && notes.restart_pending.contains(name),
        shadowed_by: o.shadowed_by,
        revision: 0,
        fingerprint: Some(def.fingerprint),
        id: Some(raw.id.clone()),
    });
    Candidate {
        entry,
        definition: raw.def.clone(),
        precedence: raw.precedence,
        id: raw.id.clone(),
        view,
    }
}
