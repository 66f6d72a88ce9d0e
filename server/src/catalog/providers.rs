//! Providers: what each `providers/<kind>/<reference>` of a claimant refers
//! to, and which claimants are rejected because of their providers
//! (missing, unavailable, shadowed, rejected, or in a cycle), transitively.
//!
//! A VM of an untrusted source may use providers only from trusted sources
//! and from its own source; another untrusted source's VM is refused with
//! `provider-untrusted`, unless [`MergeOptions::cross_source_providers`]
//! allows it.
//!
//! A reference means what [`super::refer`] says (the one claimant rule). A
//! reference to a definition that does not claim its name (it is shadowed,
//! or its source went away) is refused with `provider-unavailable`: only a
//! VM that claims its name is a VM.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use vm_catalog_protocol::{DiagCode, SourceEntry, SourceLabel, Trust, VmName, VmState};

use super::cycles::cyclic_nodes;
use super::resolve::{Outcome, Raw, err};
use super::{Candidate, MergeOptions, Names};
use crate::definition::Definition;

/// What a reference found.
#[derive(Debug, Clone, Copy)]
pub(super) enum Found<'a> {
    /// The claimant of a name (its index in the raws).
    Claimant(usize),
    /// A definition that does not claim its name: shadowed, or unavailable.
    NotClaimant(usize),
    /// The claimant of a name outside the raws, resolved already.
    OutClaimant(&'a Candidate),
    /// A definition outside the raws that does not claim its name.
    OutNotClaimant(&'a Candidate),
    /// Nothing.
    Missing,
}

/// The resolved candidates of every name that is not being resolved, when
/// only some names are: whatever they refer to is not being resolved
/// either (the caller made sure of it), so they stay as they are, and a
/// reference to one of them sees it as it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Outside<'a> {
    /// Every candidate (sorted by name, then precedence), those of the
    /// names being resolved included: those are skipped.
    pub cands: &'a [Arc<Candidate>],
    /// The names being resolved.
    pub inside: &'a BTreeSet<VmName>,
}

/// Where a claimant's provider leads.
#[derive(Debug, Clone, Copy)]
enum Target {
    /// A claimant among the raws.
    In(usize),
    /// A claimant outside, resolved: whether it is active.
    Out(bool),
}

/// The names and definitions that references are resolved against.
pub(super) struct Index<'a> {
    raws: &'a [Raw],
    sources: &'a [SourceEntry],
    names: Names,
    cross_source: bool,
    outside: Option<Outside<'a>>,
}

impl<'a> Index<'a> {
    /// `raws` (sorted by name, then precedence) from `sources`, named and
    /// allowed providers as `opts` says.
    pub(super) fn new(
        raws: &'a [Raw],
        sources: &'a [SourceEntry],
        opts: &MergeOptions,
        outside: Option<Outside<'a>>,
    ) -> Index<'a> {
        Index {
            raws,
            sources,
            names: opts.names,
            cross_source: opts.cross_source_providers,
            outside,
        }
    }

    fn trusted(&self, label: &SourceLabel) -> bool {
        self.sources
            .iter()
            .any(|s| &s.label == label && s.trust == Trust::Trusted)
    }

    /// Whether a claimant of the source `of` may not use a claimant of
    /// `provider` as a provider: `provider` is another untrusted source
    /// than `of`, also untrusted, and cross-source providers are not
    /// allowed.
    fn untrusted_crossing(&self, of: &SourceLabel, provider: &SourceLabel) -> bool {
        !self.cross_source && of != provider && !self.trusted(of) && !self.trusted(provider)
    }

    fn has_label(&self, l: &SourceLabel) -> bool {
        self.sources.iter().any(|s| &s.label == l)
    }

    /// What `reference` refers to, by the one claimant rule
    /// ([`super::refer`]).
    pub(super) fn find(&self, reference: &VmName) -> Found<'a> {
        let has_label = |l: &SourceLabel| self.has_label(l);
        match super::refer(self.raws, reference, has_label, self.names) {
            Some(r) if r.is_claimant() => return Found::Claimant(r.pick),
            Some(r) => return Found::NotClaimant(r.pick),
            None => {}
        }
        let Some(out) = self.outside else {
            return Found::Missing;
        };
        if out
            .inside
            .contains(target_name(reference, has_label, self.names).as_str())
        {
            return Found::Missing;
        }
        match super::refer(out.cands, reference, has_label, self.names) {
            Some(r) if r.is_claimant() => Found::OutClaimant(&out.cands[r.pick]),
            Some(r) => Found::OutNotClaimant(&out.cands[r.pick]),
            None => Found::Missing,
        }
    }

    /// The claimants, by index in the raws.
    pub(super) fn claimants(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.raws.len() {
            let n = super::claim::range_of(&self.raws[start..], self.raws[start].name.as_str()).end;
            out.extend(super::claim::claimant(&self.raws[start..start + n]).map(|c| start + c));
            start += n;
        }
        out
    }

    /// Why nothing answers to `reference`, with a hint when the catalog
    /// has qualified names and the reference is a bare directory name.
    fn missing(&self, reference: &VmName) -> String {
        let inside = self
            .raws
            .iter()
            .find(|r| r.def.name == *reference && r.name != *reference)
            .map(|r| (&r.name, r.precedence));
        // The first in (name, precedence) order, inside and outside alike.
        let outside = self.outside.and_then(|out| {
            out.cands
                .iter()
                .filter(|c| !out.inside.contains(&c.entry.name))
                .find(|c| c.definition.name == *reference && c.entry.name != *reference)
                .map(|c| (&c.entry.name, c.precedence))
        });
        let first = match (inside, outside) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let hint = first
            .map(|(name, _)| format!(" (did you mean {name}?)"))
            .unwrap_or_default();
        format!("provider {reference} is not in the catalog{hint}")
    }
}

/// The catalog name `reference` means: the qualified reading's, or
/// itself ([`super::refer`]).
pub(super) fn target_name(
    reference: &str,
    has_label: impl Fn(&SourceLabel) -> bool,
    names: Names,
) -> String {
    match super::qualified(reference, has_label) {
        Some((label, dir)) => super::claim::catalog_name(names, &label, &dir),
        None => reference.to_owned(),
    }
}

pub(super) fn provider_path(def: &Definition, p: &vm_catalog_protocol::Provider) -> PathBuf {
    def.dir
        .join("providers")
        .join(p.kind.as_str())
        .join(p.name.as_str())
}

/// Rejects active claimants whose providers are missing, unavailable,
/// shadowed, rejected, or in a cycle — transitively. Returns, for every
/// claimant, the catalog name each of its references resolved to (`None`
/// where it did not resolve to a claimant).
pub(super) fn resolve_providers(
    idx: &Index<'_>,
    outcomes: &mut [Outcome],
) -> BTreeMap<usize, Vec<Option<VmName>>> {
    let raws = idx.raws;
    let mut resolved: BTreeMap<usize, Vec<Option<VmName>>> = BTreeMap::new();
    // Edges between active claimants, each with the index of the provider
    // file that makes it; direct problems first.
    let mut edges: BTreeMap<usize, Vec<(usize, Target)>> = BTreeMap::new();
    for i in idx.claimants() {
        let def = &raws[i].def;
        let mut out = Vec::new();
        let mut names = Vec::new();
        let mut problems = Vec::new();
        for (k, p) in def.providers.iter().enumerate() {
            let path = provider_path(def, &p.provider);
            let reference = &p.provider.name;
            let found = idx.find(reference);
            names.push(match found {
                Found::Claimant(j) => Some(raws[j].name.clone()),
                Found::OutClaimant(c) => Some(c.entry.name.clone()),
                _ => None,
            });
            if outcomes[i].state != VmState::Active {
                continue;
            }
            match edge(idx, (i, reference, &path), found, outcomes) {
                Ok(t) => out.push((k, t)),
                Err(problem) => problems.push(problem),
            }
        }
        resolved.insert(i, names);
        if outcomes[i].state != VmState::Active {
            continue;
        }
        if !problems.is_empty() {
            outcomes[i].state = VmState::Rejected;
            outcomes[i].extra.extend(problems);
        }
        edges.insert(i, out);
    }
    reject_cycles_and_dependants(raws, &edges, outcomes);
    resolved
}

/// Where the reference `reference` of the claimant `i` (in its provider
/// file `path`) leads, given what it `found`; or why it may not.
fn edge(
    idx: &Index<'_>,
    (i, reference, path): (usize, &VmName, &std::path::Path),
    found: Found<'_>,
    outcomes: &[Outcome],
) -> Result<Target, vm_catalog_protocol::Diagnostic> {
    let raws = idx.raws;
    // The claimant found: where it leads, and its source.
    let claimant = match found {
        Found::Claimant(j) => Some((Target::In(j), &raws[j].source)),
        Found::OutClaimant(c) => Some((
            Target::Out(c.entry.state == VmState::Active),
            &c.entry.source,
        )),
        _ => None,
    };
    // A definition found that does not claim: whose it is.
    let not_claimant = match found {
        Found::NotClaimant(j) => Some((&outcomes[j].shadowed_by, &raws[j].name)),
        Found::OutNotClaimant(c) => Some((&c.entry.shadowed_by, &c.entry.name)),
        _ => None,
    };
    match (claimant, not_claimant) {
        (Some((_, from)), _) if idx.untrusted_crossing(&raws[i].source, from) => Err(err(
            DiagCode::ProviderUntrusted,
            path,
            format!(
                "provider {reference} is from the untrusted source {from}: a VM of \
                 the untrusted source {} may use providers only from trusted \
                 sources and its own (--allow-cross-source-providers allows it)",
                raws[i].source
            ),
        )),
        (Some((t, _)), _) => Ok(t),
        (None, Some((shadowed_by, name))) => Err(err(
            DiagCode::ProviderUnavailable,
            path,
            match shadowed_by {
                Some(by) => format!("provider {reference} is shadowed: source {by} claims {name}"),
                None => format!("provider {reference} is unavailable (its source went away)"),
            },
        )),
        (None, None) => Err(err(DiagCode::MissingProvider, path, idx.missing(reference))),
    }
}

/// Cycles among the claimants reject their members; whoever depends on a
/// rejected claimant is rejected, transitively. `links` are the edges, each
/// with the index of the provider file that makes it.
fn reject_cycles_and_dependants(
    raws: &[Raw],
    links: &BTreeMap<usize, Vec<(usize, Target)>>,
    outcomes: &mut [Outcome],
) {
    let edges: BTreeMap<usize, Vec<usize>> = links
        .iter()
        .map(|(&i, out)| {
            let inside = out.iter().filter_map(|&(_, t)| match t {
                Target::In(j) => Some(j),
                Target::Out(_) => None,
            });
            (i, inside.collect())
        })
        .collect();
    // Each provider file of `i` that resolved to a claimant, and where.
    let targets = |i: usize| {
        let def = &raws[i].def;
        links[&i].iter().map(move |&(k, t)| (&def.providers[k], t))
    };
    // Cycles among the claimants (whatever their state: a cycle through a
    // rejected VM is reported as that VM being rejected).
    let cycles = cyclic_nodes(&edges);
    for (&i, &c) in &cycles.component_of {
        let group = &cycles.components[c];
        let names = cycle_names(raws, group);
        let def = &raws[i].def;
        let mut found = Vec::new();
        for (p, t) in targets(i) {
            if matches!(t, Target::In(j) if cycles.component_of.get(&j) == Some(&c)) {
                found.push(err(
                    DiagCode::ProviderCycle,
                    &provider_path(def, &p.provider),
                    format!("providers form a cycle among {names}"),
                ));
            }
        }
        outcomes[i].extra.extend(found);
        outcomes[i].state = VmState::Rejected;
    }
    // Propagate over reverse edges (a worklist: linear in the graph).
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
    // A rejected provider outside rejects its dependant, which goes on.
    for (&i, out) in links {
        let rejected_outside = out.iter().any(|&(_, t)| matches!(t, Target::Out(false)));
        if rejected_outside && outcomes[i].state == VmState::Active {
            outcomes[i].state = VmState::Rejected;
            work.push(i);
        }
    }
    while let Some(j) = work.pop() {
        for &i in dependants.get(&j).map(Vec::as_slice).unwrap_or(&[]) {
            if outcomes[i].state == VmState::Active {
                outcomes[i].state = VmState::Rejected;
                work.push(i);
            }
        }
    }
    say_why(raws, links, &cycles, outcomes);
}

/// Says which providers are the reason, for every rejected dependant (not
/// in a cycle).
fn say_why(
    raws: &[Raw],
    links: &BTreeMap<usize, Vec<(usize, Target)>>,
    cycles: &super::cycles::Cycles,
    outcomes: &mut [Outcome],
) {
    let targets = |i: usize| {
        let def = &raws[i].def;
        links[&i].iter().map(move |&(k, t)| (&def.providers[k], t))
    };
    for &i in links.keys() {
        if cycles.component_of.contains_key(&i) || outcomes[i].state == VmState::Active {
            continue;
        }
        let def = &raws[i].def;
        let mut found = Vec::new();
        for (p, t) in targets(i) {
            let active = match t {
                Target::In(j) => outcomes[j].state == VmState::Active,
                Target::Out(active) => active,
            };
            if !active {
                found.push(err(
                    DiagCode::ProviderUnavailable,
                    &provider_path(def, &p.provider),
                    format!("provider {} is rejected", p.provider.name),
                ));
            }
        }
        outcomes[i].extra.extend(found);
    }
}

/// The names in a cycle, for a message: at most a few, so that a huge
/// cycle does not make huge diagnostics.
fn cycle_names(raws: &[Raw], group: &[usize]) -> String {
    const SHOWN: usize = 8;
    let mut names: Vec<&str> = group
        .iter()
        .take(SHOWN)
        .map(|&j| raws[j].name.as_str())
        .collect();
    names.sort_unstable();
    let mut s = names.join(", ");
    if group.len() > SHOWN {
        s.push_str(&format!(" and {} more", group.len() - SHOWN));
    }
    s
}
