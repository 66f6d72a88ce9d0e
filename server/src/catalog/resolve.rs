//! One name, one VM (DESIGN §3): which candidate claims each name, which are
//! shadowed, and which claimants are rejected because of their providers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{DiagCode, Diagnostic, SourceLabel, VmEntry, VmName, VmState};

use super::Candidate;
use super::cycles::cyclic_nodes;
use crate::definition::{Definition, display_path};

/// A candidate before resolution.
#[derive(Debug, Clone)]
pub(crate) struct Raw {
    pub def: Arc<Definition>,
    pub source: SourceLabel,
    pub precedence: u32,
    /// Its source went away: kept from the previous catalog.
    pub unavailable: bool,
}

/// What is known about the live state, to be shown on active entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Annotations {
    pub services: BTreeMap<VmName, String>,
    pub restart_pending: BTreeSet<VmName>,
    /// Active VMs the applier left out of the database: (code, message).
    pub left_out: BTreeMap<VmName, Vec<(DiagCode, String)>>,
}

fn err(code: DiagCode, path: &Path, message: String) -> Diagnostic {
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
struct Outcome {
    state: VmState,
    shadowed_by: Option<SourceLabel>,
    extra: Vec<Diagnostic>,
}

/// Resolves `raws` (sorted by name, then precedence) into candidates.
///
/// `forced` rejects claimants from outside (a view that could not be built,
/// …), before provider resolution, so their dependants are rejected too.
pub(crate) fn resolve(
    raws: &[Raw],
    forced: &BTreeMap<VmName, Vec<Diagnostic>>,
    vm_dir: &Path,
    notes: &Annotations,
) -> Vec<Candidate> {
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(raws.len());
    // Name → index of its claimant (the first available candidate).
    let mut claimant: BTreeMap<&VmName, usize> = BTreeMap::new();
    // Names that have only unavailable candidates.
    let mut only_unavailable: BTreeSet<&VmName> = BTreeSet::new();
    for (i, raw) in raws.iter().enumerate() {
        let name = &raw.def.name;
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
            if !claimant.contains_key(name) {
                only_unavailable.insert(name);
            }
        } else if let Some(&c) = claimant.get(name) {
            let winner = &raws[c];
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
            claimant.insert(name, i);
            only_unavailable.remove(name);
            if let Some(ds) = forced.get(name) {
                o.extra.extend(ds.iter().cloned());
            }
            if !raw.def.is_valid() || forced.contains_key(name) {
                o.state = VmState::Rejected;
            }
        }
        outcomes.push(o);
    }
    resolve_providers(raws, &claimant, &only_unavailable, &mut outcomes);
    raws.iter()
        .zip(outcomes)
        .map(|(raw, o)| build(raw, o, vm_dir, notes))
        .collect()
}

fn provider_path(def: &Definition, p: &vm_catalog_protocol::Provider) -> std::path::PathBuf {
    def.dir
        .join("providers")
        .join(p.kind.as_str())
        .join(p.name.as_str())
}

/// Rejects active claimants whose providers are missing, unavailable,
/// rejected, or in a cycle — transitively.
fn resolve_providers(
    raws: &[Raw],
    claimant: &BTreeMap<&VmName, usize>,
    only_unavailable: &BTreeSet<&VmName>,
    outcomes: &mut [Outcome],
) {
    // Edges between active claimants; direct problems first.
    let mut edges: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &i in claimant.values() {
        if outcomes[i].state != VmState::Active {
            continue;
        }
        let def = &raws[i].def;
        let mut out = Vec::new();
        let mut problems = Vec::new();
        for p in &def.providers {
            let path = provider_path(def, &p.provider);
            match claimant.get(&p.provider.name) {
                Some(&j) => out.push(j),
                None if only_unavailable.contains(&p.provider.name) => problems.push(err(
                    DiagCode::ProviderUnavailable,
                    &path,
                    format!(
                        "provider {} is unavailable (its source went away)",
                        p.provider.name
                    ),
                )),
                None => problems.push(err(
                    DiagCode::MissingProvider,
                    &path,
                    format!("provider {} is not in the catalog", p.provider.name),
                )),
            }
        }
        if !problems.is_empty() {
            outcomes[i].state = VmState::Rejected;
            outcomes[i].extra.extend(problems);
        }
        edges.insert(i, out);
    }
    // Cycles among the claimants (whatever their state: a cycle through a
    // rejected VM is reported as that VM being rejected).
    let cycles = cyclic_nodes(&edges);
    for (&i, &c) in &cycles.component_of {
        let group = &cycles.components[c];
        let names = cycle_names(raws, group);
        let def = &raws[i].def;
        for p in &def.providers {
            let in_group = claimant
                .get(&p.provider.name)
                .is_some_and(|j| cycles.component_of.get(j) == Some(&c));
            if in_group {
                outcomes[i].extra.push(err(
                    DiagCode::ProviderCycle,
                    &provider_path(def, &p.provider),
                    format!("providers form a cycle among {names}"),
                ));
            }
        }
        outcomes[i].state = VmState::Rejected;
    }
    // Propagate: whoever depends on a rejected claimant is rejected,
    // transitively (a worklist over reverse edges: linear in the graph).
    let mut dependants: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (&i, out) in &edges {
        for &j in out {
            dependants.entry(j).or_default().push(i);
        }
    }
    let mut work: Vec<usize> = dependants
        .keys()
        .copied()
        .filter(|&j| outcomes[j].state != VmState::Active)
        .collect();
    while let Some(j) = work.pop() {
        for &i in dependants.get(&j).map(Vec::as_slice).unwrap_or(&[]) {
            if outcomes[i].state == VmState::Active {
                outcomes[i].state = VmState::Rejected;
                work.push(i);
            }
        }
    }
    // Say which providers are the reason, for every rejected dependant.
    for (&i, out) in &edges {
        if cycles.component_of.contains_key(&i) || outcomes[i].state == VmState::Active {
            continue;
        }
        let def = &raws[i].def;
        for p in &def.providers {
            let Some(&j) = claimant.get(&p.provider.name) else {
                continue;
            };
            if out.contains(&j) && outcomes[j].state != VmState::Active {
                outcomes[i].extra.push(err(
                    DiagCode::ProviderUnavailable,
                    &provider_path(def, &p.provider),
                    format!("provider {} is rejected", p.provider.name),
                ));
            }
        }
    }
}

/// The names in a cycle, for a message: at most a few, so that a huge
/// cycle does not make huge diagnostics.
fn cycle_names(raws: &[Raw], group: &[usize]) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = group
        .iter()
        .take(SHOWN)
        .map(|&j| raws[j].def.name.as_str())
        .collect();
    names.sort_unstable();
    let mut s = names.join(", ");
    if group.len() > SHOWN {
        s.push_str(&format!(" and {} more", group.len() - SHOWN));
    }
    s
}

fn build(raw: &Raw, o: Outcome, vm_dir: &Path, notes: &Annotations) -> Candidate {
    let def = &raw.def;
    let active = o.state == VmState::Active;
    let view = active.then(|| view_path(vm_dir, &def.name));
    let mut diagnostics = def.diagnostics.clone();
    diagnostics.extend(o.extra);
    if active {
        for (code, message) in notes
            .left_out
            .get(&def.name)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            diagnostics.push(err(
                *code,
                &def.dir,
                format!("not in the VM database: {message}"),
            ));
        }
    }
    let entry = VmEntry {
        name: def.name.clone(),
        source: raw.source.clone(),
        state: o.state,
        path: display_path(&def.dir),
        view: view.as_deref().map(display_path),
        service: if active {
            notes.services.get(&def.name).cloned()
        } else {
            None
        },
        providers: def.provider_list(),
        diagnostics,
        restart_pending: active && notes.restart_pending.contains(&def.name),
        shadowed_by: o.shadowed_by,
        revision: 0,
    };
    Candidate {
        entry,
        definition: raw.def.clone(),
        precedence: raw.precedence,
        view,
    }
}

/// `<vm_dir>/<name>/config`: the view of an active VM.
pub fn view_path(vm_dir: &Path, name: &VmName) -> std::path::PathBuf {
    vm_dir.join(name.as_str()).join("config")
}
