//! Merging scanned sources into a [`Draft`]: sources in precedence order,
//! candidates from each scan, and for a source that went away (or failed)
//! its previous candidates, kept as `unavailable`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{DiagCode, Diagnostic, SourceEntry, SourceLabel, SourceState, VmName};

use super::draft::{Draft, Replaced};
use super::refs::Refs;
use super::resolve::Raw;
use super::{Catalog, MergeOptions, Names, VmIds};
use crate::definition::{Definition, SourceScan, display_path};

/// [`merge_with`] with plain names and views under `vm_dir`, keeping the ids
/// of `prev`'s definitions (new ones come from a fixed seed).
pub fn merge(prev: &Catalog, scans: Vec<SourceScan>, vm_dir: &Path) -> Draft {
    let known = prev.candidates.iter().map(|c| {
        (
            (c.entry.source.clone(), c.definition.name.clone()),
            c.id.clone(),
        )
    });
    merge_with(
        prev,
        scans,
        &MergeOptions::plain(vm_dir),
        &mut VmIds::with(known, 1),
    )
}

/// The catalog name of `def` from the source `label`, or why it has none.
fn catalog_name(names: Names, label: &SourceLabel, def: &Definition) -> Result<VmName, Diagnostic> {
    match names {
        Names::Plain => Ok(def.name.clone()),
        Names::Qualified => {
            VmName::try_from(format!("{label}.{}", def.name)).map_err(|why| Diagnostic {
                code: DiagCode::InvalidName,
                severity: vm_catalog_protocol::Severity::Error,
                path: display_path(&def.dir),
                message: format!(
                    "the qualified name {label}.{} is not a valid VM name: {why}",
                    def.name
                ),
            })
        }
    }
}

/// Merges `scans` (in precedence order: index 0 wins) against `prev`.
///
/// - Each definition is named as `opts.names` says, and has an id from
///   `ids` (made there if it is new).
/// - Each name is claimed by its highest-precedence available definition,
///   valid or not; lower ones are `shadowed` (naming the winner).
/// - Providers are resolved: a missing, unavailable, shadowed, rejected or
///   cyclic provider rejects its dependants, transitively.
/// - A source whose state is `unavailable` (gone) or `failed` keeps its
///   definitions from `prev`, as `unavailable`.
/// - A scan whose label repeats an earlier one is ignored (and logged).
///
/// Active entries get their view, as `opts.layout` places it. The
/// live-state annotations (`service`, `restart_pending`) are carried over
/// from `prev` until [`Draft::annotate`] replaces them.
pub fn merge_with(
    prev: &Catalog,
    scans: Vec<SourceScan>,
    opts: &MergeOptions,
    ids: &mut VmIds,
) -> Draft {
    merge_scans(prev, &scans, opts, ids)
}

/// [`merge_with`], leaving the scans to the caller (a rescan keeps them,
/// for the next one to read only what changed).
pub fn merge_scans(
    prev: &Catalog,
    scans: &[SourceScan],
    opts: &MergeOptions,
    ids: &mut VmIds,
) -> Draft {
    let mut seen = BTreeSet::new();
    let mut sources = Vec::with_capacity(scans.len());
    let mut raws = Vec::new();
    for scan in scans {
        if !seen.insert(scan.spec.label.clone()) {
            tracing::warn!(label = %scan.spec.label, "duplicate source label, scan ignored");
            continue;
        }
        let precedence = sources.len() as u32;
        let label = scan.spec.label.clone();
        let before = raws.len();
        let mut diagnostics = scan.diagnostics.clone();
        match scan.state {
            SourceState::Unavailable | SourceState::Failed => {
                for c in prev.candidates.iter().filter(|c| c.entry.source == label) {
                    raws.push(Raw {
                        def: c.definition.clone(),
                        name: c.entry.name.clone(),
                        id: c.id.clone(),
                        source: label.clone(),
                        precedence,
                        unavailable: true,
                    });
                }
            }
            SourceState::Ready | SourceState::Missing => {
                for def in &scan.definitions {
                    match catalog_name(opts.names, &label, def) {
                        Ok(name) => raws.push(Raw {
                            id: ids.assign(&label, &def.name),
                            def: def.clone(),
                            name,
                            source: label.clone(),
                            precedence,
                            unavailable: false,
                        }),
                        // Not a definition at all, as an invalid directory name.
                        Err(d) => diagnostics.push(d),
                    }
                }
            }
        }
        let definitions = (raws.len() - before) as u32;
        sources.push(source_entry(scan, precedence, definitions, diagnostics));
    }
    raws.sort_by(|a, b| (&a.name, a.precedence).cmp(&(&b.name, b.precedence)));
    let notes = prev.notes.clone();
    Draft::new(prev, opts.clone(), raws, sources, notes)
}

/// The source entry of `scan`, which gave `definitions` definitions and
/// `diagnostics`, at `precedence`.
fn source_entry(
    scan: &SourceScan,
    precedence: u32,
    definitions: u32,
    diagnostics: Vec<Diagnostic>,
) -> SourceEntry {
    let spec = &scan.spec;
    SourceEntry {
        label: spec.label.clone(),
        kind: spec.kind,
        trust: spec.trust,
        path: display_path(&spec.root),
        device: spec.device.as_deref().map(display_path),
        partuuid: spec.partuuid.clone(),
        state: scan.state,
        read_only: spec.read_only,
        precedence,
        definitions,
        diagnostics,
        revision: 0,
    }
}

/// An entry read again: its definition before and after (`None`: it is
/// not one, or not there).
pub type EntryChange = (Option<Arc<Definition>>, Option<Arc<Definition>>);

/// How one source's scan was made from the one before: which of its
/// definitions it read again.
#[derive(Debug, Clone, Default)]
pub struct Changed {
    /// Each entry read again; `None` when the source was read whole.
    pub entries: Option<Vec<EntryChange>>,
    /// How many diagnostics the scan before gave.
    pub diagnostics_before: usize,
}

/// [`merge_scans`] of `scans`, made from the scans `prev` was merged from
/// as `changed` says (one per scan), resolving only what changed: the
/// names of the definitions read again, and every name whose resolution
/// depends on them (`refs`: `prev`'s provider references). `None` when it
/// cannot (a source was read whole and is not missing, before and after;
/// the sources changed; a definition has no valid catalog name): then
/// [`merge_scans`] it is.
pub fn merge_changed(
    prev: &Catalog,
    scans: &[SourceScan],
    changed: &[Changed],
    refs: Arc<Refs>,
    (opts, ids): (&MergeOptions, &mut VmIds),
) -> Option<Draft> {
    let same_sources = prev.names == opts.names
        && prev.generation > 0
        && prev.sources.len() == scans.len()
        && changed.len() == scans.len();
    if !same_sources {
        return None;
    }
    let mut sources = Vec::with_capacity(scans.len());
    let mut replaced = Replaced::new();
    for (i, ((scan, before), c)) in scans.iter().zip(&prev.sources).zip(changed).enumerate() {
        let label = &scan.spec.label;
        let same = (label, scan.spec.trust, scan.state)
            == (&before.label, before.trust, before.state)
            && before.precedence == i as u32;
        let entries = match (&c.entries, scan.state) {
            (Some(e), SourceState::Ready) => e.as_slice(),
            (None, SourceState::Missing) if before.definitions == 0 => &[],
            _ => return None,
        };
        if !same || c.diagnostics_before > before.diagnostics.len() {
            return None;
        }
        let mut definitions = i64::from(before.definitions);
        for (old, new) in entries {
            if old.is_none() && new.is_none() {
                continue;
            }
            if let (Some(a), Some(b)) = (old, new)
                && Arc::ptr_eq(a, b)
            {
                continue;
            }
            let def = old.as_ref().or(new.as_ref())?;
            let name = catalog_name(opts.names, label, def).ok()?;
            if let Some(new) = new {
                catalog_name(opts.names, label, new).ok()?;
            }
            definitions += i64::from(new.is_some()) - i64::from(old.is_some());
            let group = replaced.entry(name.clone()).or_insert_with(|| {
                prev.candidates_of(name.as_str())
                    .iter()
                    .map(|c| Raw::of(c))
                    .collect()
            });
            group.retain(|r| &r.source != label);
            if let Some(def) = new {
                group.push(Raw {
                    id: ids.assign(label, &def.name),
                    def: def.clone(),
                    name: name.clone(),
                    source: label.clone(),
                    precedence: i as u32,
                    unavailable: false,
                });
                group.sort_by_key(|r| r.precedence);
            }
        }
        let mut diagnostics = scan.diagnostics.clone();
        diagnostics.extend_from_slice(&before.diagnostics[c.diagnostics_before..]);
        let definitions = u32::try_from(definitions).ok()?;
        sources.push(source_entry(scan, i as u32, definitions, diagnostics));
    }
    Some(Draft::incremental(
        prev,
        opts.clone(),
        sources,
        (replaced, BTreeSet::new()),
        refs,
    ))
}
