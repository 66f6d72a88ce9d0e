//! Merging scanned sources into a [`Draft`]: sources in precedence order,
//! candidates from each scan, and for a source that went away (or failed)
//! its previous candidates, kept as `unavailable`.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use vm_catalog_protocol::{SourceEntry, SourceState};

use super::draft::Draft;
use super::resolve::Raw;
use super::{Catalog, active_vms};
use crate::definition::{SourceScan, display_path};

/// Merges `scans` (in precedence order: index 0 wins) against `prev`.
///
/// - Each name is claimed by its highest-precedence available definition,
///   valid or not; lower ones are `shadowed` (naming the winner).
/// - Providers are resolved: a missing, unavailable, rejected or cyclic
///   provider rejects its dependants, transitively.
/// - A source whose state is `unavailable` (gone) or `failed` keeps its
///   definitions from `prev`, as `unavailable`.
/// - A scan whose label repeats an earlier one is ignored (and logged).
///
/// Active entries get their view, `<vm_dir>/<name>/config`. The live-state
/// annotations (`service`, `restart_pending`) are carried over from `prev`
/// until [`Draft::annotate`] replaces them.
pub fn merge(prev: &Catalog, scans: Vec<SourceScan>, vm_dir: &Path) -> Draft {
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
        match scan.state {
            SourceState::Unavailable | SourceState::Failed => {
                for c in prev.candidates.iter().filter(|c| c.entry.source == label) {
                    raws.push(Raw {
                        def: c.definition.clone(),
                        source: label.clone(),
                        precedence,
                        unavailable: true,
                    });
                }
            }
            SourceState::Ready | SourceState::Missing => {
                for def in scan.definitions {
                    raws.push(Raw {
                        def: Arc::new(def),
                        source: label.clone(),
                        precedence,
                        unavailable: false,
                    });
                }
            }
        }
        let spec = scan.spec;
        sources.push(SourceEntry {
            label,
            kind: spec.kind,
            trust: spec.trust,
            path: display_path(&spec.root),
            device: spec.device.as_deref().map(display_path),
            partuuid: spec.partuuid,
            state: scan.state,
            read_only: spec.read_only,
            precedence,
            definitions: (raws.len() - before) as u32,
            diagnostics: scan.diagnostics,
            revision: 0,
        });
    }
    raws.sort_by(|a, b| (&a.def.name, a.precedence).cmp(&(&b.def.name, b.precedence)));
    let notes = prev.notes.clone();
    Draft::new(
        prev.cursor(),
        active_vms(&prev.candidates),
        vm_dir.to_path_buf(),
        raws,
        sources,
        notes,
    )
}
