//! A ready source's scan entry by entry ([`Entries`]), so that a rescan
//! told which entries of its root changed reads only those again
//! ([`rescan_entries`]) and keeps what every other entry gave.
//!
//! What the scan of a source says is a function of its spec, its root's
//! final path and what each listed entry gives on its own (a definition,
//! source-level diagnostics, or nothing): [`Entries::assemble`] puts those
//! together in the order a whole scan reads them (entries sorted by name),
//! for a whole scan and a partial one alike. So a partial rescan gives
//! what a whole one would, as long as the entries it did not read did not
//! change; whatever else may have changed (the spec, the root, the number
//! of entries past the cap, a failing device) makes it give up, and the
//! source is read whole.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use rustix::io::Errno;
use vm_catalog_protocol::{Diagnostic, SourceState, Trust};

use super::files::Ctx;
use super::fs::{OpenDir, Walk};
use super::scan::read_entry;
use super::{Definition, ScanOptions, SourceScan};
use crate::source::{Presence, SourceSpec};

/// What one listed entry of a source root gave.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EntryScan {
    /// Its source-level diagnostics (an invalid name, not a directory, …).
    pub diagnostics: Vec<Diagnostic>,
    /// Its definition, if it is one.
    pub definition: Option<Arc<Definition>>,
}

/// Every listed entry of a ready source's root, and the root's final path.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entries {
    /// The root as the scan opened it (its canonical path for a directory
    /// source): the definitions' paths are built from it.
    pub root: PathBuf,
    /// What each entry gave, by name.
    pub by_name: BTreeMap<OsString, EntryScan>,
}

impl Entries {
    /// The scan's definitions (sorted by name) and diagnostics (the spec's,
    /// then each entry's in name order), as a whole scan lists them.
    pub fn assemble(&self, spec: &SourceSpec) -> (Vec<Arc<Definition>>, Vec<Diagnostic>) {
        let definitions = self
            .by_name
            .values()
            .filter_map(|e| e.definition.clone())
            .collect();
        let mut diagnostics = spec.diagnostics.clone();
        for e in self.by_name.values() {
            diagnostics.extend(e.diagnostics.iter().cloned());
        }
        (definitions, diagnostics)
    }
}

/// How a source's tree is walked, from its trust.
pub(super) fn walk_of(trust: Trust) -> Walk {
    match trust {
        Trust::Trusted => Walk::Trusted,
        Trust::Untrusted => Walk::Untrusted,
    }
}

/// The scan of `spec` that reading it whole would give, made from `prev`
/// (its last scan) by reading again only the root's entries `names`; `None`
/// when the source has to be read whole: it was not ready or its spec
/// changed, its root cannot be opened or now resolves elsewhere, a name is
/// not a single entry name, an entry cannot be looked at, the root would
/// hold more entries than the cap, or the device failed.
pub fn rescan_entries(
    prev: SourceScan,
    spec: &SourceSpec,
    names: &BTreeSet<OsString>,
    opts: &ScanOptions,
) -> Option<SourceScan> {
    let reusable = prev.state == SourceState::Ready
        && !prev.exhausted
        && prev.spec == *spec
        && spec.presence == Presence::Present;
    let mut entries = prev.entries.filter(|_| reusable)?;
    if names.is_empty() {
        return Some(SourceScan {
            entries: Some(entries),
            ..prev
        });
    }
    let walk = walk_of(spec.trust);
    let root = OpenDir::open_root(&spec.root, spec.kind, walk).ok()?;
    if root.path() != entries.root {
        return None;
    }
    let ctx = Ctx::new(walk, opts);
    for name in names {
        match reread(&root, name, &ctx)? {
            Some(e) => entries.by_name.insert(name.clone(), e),
            None => entries.by_name.remove(name),
        };
    }
    if entries.by_name.len() > opts.max_source_entries {
        return None;
    }
    let (definitions, diagnostics) = entries.assemble(spec);
    Some(SourceScan {
        spec: spec.clone(),
        state: SourceState::Ready,
        diagnostics,
        definitions,
        exhausted: false,
        entries: Some(entries),
    })
}

/// What the entry `name` of `root` gives now: `Some(None)` when it is not
/// there, `None` when it cannot be told.
fn reread(root: &OpenDir, name: &OsStr, ctx: &Ctx<'_>) -> Option<Option<EntryScan>> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return None;
    }
    match root.lstat(name) {
        Ok(_) => {}
        Err(Errno::NOENT) => return Some(None),
        Err(_) => return None,
    }
    let mut diagnostics = Vec::new();
    let definition = read_entry(root, name, ctx, &mut diagnostics).ok()?;
    Some(Some(EntryScan {
        diagnostics,
        definition: definition.map(Arc::new),
    }))
}
