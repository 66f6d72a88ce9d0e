//! What a UI VM may see, built for it from typed data: never from a
//! message, a tool's output or any other host text, so nothing is scanned
//! and nothing can slip through (`docs/security.md`, "A defined VM view").
//!
//! Every reply and event a VM peer gets is made here (the records and
//! batch bodies of [`super::Published`] and [`super::Batch`] for
//! [`Audience::Vm`] are encoded from it once per generation). Each
//! function writes out every field of its type, with no `..`: a field
//! added to the protocol does not compile until it is decided here.
//!
//! A VM gets names, ids, source labels, kinds, trust and states,
//! providers, services, revisions, fingerprints, partition UUIDs,
//! diagnostic codes and severities, apply statuses and counts of the
//! catalog. It never gets: a definition's `path` or `view`, a source's
//! `path` or `device`, a diagnostic's message (it reads the code's name),
//! a diagnostic's path unless it lies inside the entry's own directory
//! (then the part inside, component by component: `blk/root.img`), the
//! applier's database or messages (it reads the status's name), nor the
//! host's connection and subscriber counts (0).

use std::borrow::Cow;
use std::path::{Component, Path};

use vm_catalog_protocol::{
    ApplyOutcome, Change, ChangeItem, Diagnostic, Info, RescanOutcome, SourceEntry, VmEntry,
};

/// Who a reply is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// A host client: everything.
    Host,
    /// A UI VM: what this module builds.
    Vm,
}

impl Audience {
    /// A VM entry as this audience sees it.
    pub fn vm(self, e: &VmEntry) -> Cow<'_, VmEntry> {
        match self {
            Audience::Host => Cow::Borrowed(e),
            Audience::Vm => Cow::Owned(vm(e)),
        }
    }

    /// A source as this audience sees it.
    pub fn source(self, s: &SourceEntry) -> Cow<'_, SourceEntry> {
        match self {
            Audience::Host => Cow::Borrowed(s),
            Audience::Vm => Cow::Owned(source(s)),
        }
    }
}

/// A VM entry as a VM sees it.
pub fn vm(e: &VmEntry) -> VmEntry {
    VmEntry {
        name: e.name.clone(),
        source: e.source.clone(),
        state: e.state,
        path: String::new(),
        view: None,
        service: e.service.clone(),
        providers: e.providers.clone(),
        diagnostics: e
            .diagnostics
            .iter()
            .map(|d| diagnostic(d, &e.path))
            .collect(),
        restart_pending: e.restart_pending,
        shadowed_by: e.shadowed_by.clone(),
        revision: e.revision,
        fingerprint: e.fingerprint,
        id: e.id.clone(),
    }
}

/// A source as a VM sees it.
pub fn source(s: &SourceEntry) -> SourceEntry {
    SourceEntry {
        label: s.label.clone(),
        kind: s.kind,
        trust: s.trust,
        path: String::new(),
        device: None,
        partuuid: s.partuuid.clone(),
        state: s.state,
        read_only: s.read_only,
        precedence: s.precedence,
        definitions: s.definitions,
        diagnostics: s
            .diagnostics
            .iter()
            .map(|d| diagnostic(d, &s.path))
            .collect(),
        revision: s.revision,
    }
}

/// A change as a VM sees it.
pub fn change(c: &Change) -> Change {
    Change {
        generation: c.generation,
        kind: c.kind,
        item: match &c.item {
            ChangeItem::Vm(e) => ChangeItem::Vm(vm(e)),
            ChangeItem::Source(s) => ChangeItem::Source(source(s)),
        },
    }
}

/// `GetInfo`'s answer as a VM sees it: the catalog's counts and statuses,
/// none of the host's connections or subscribers.
pub fn info(i: &Info) -> Info {
    Info {
        server_version: i.server_version.clone(),
        protocol_version: i.protocol_version,
        cursor: i.cursor,
        applied_generation: i.applied_generation,
        applier: i.applier.clone(),
        active_vms: i.active_vms,
        definitions: i.definitions,
        sources: i.sources.clone(),
        last_rescan: i.last_rescan.as_ref().map(rescan),
        last_apply: i.last_apply.as_ref().map(apply),
        connections: 0,
        subscribers: 0,
        started_unix_ms: i.started_unix_ms,
    }
}

fn rescan(r: &RescanOutcome) -> RescanOutcome {
    RescanOutcome {
        trigger: r.trigger,
        dry_run: r.dry_run,
        generation_before: r.generation_before,
        generation: r.generation,
        changes: r.changes,
        started_unix_ms: r.started_unix_ms,
        duration_us: r.duration_us,
        apply: apply(&r.apply),
    }
}

/// An apply as a VM sees it: its status's name for a message.
fn apply(a: &ApplyOutcome) -> ApplyOutcome {
    ApplyOutcome {
        status: a.status,
        generation: a.generation,
        database: None,
        services: a.services,
        duration_us: a.duration_us,
        message: a.status.as_str().to_owned(),
    }
}

/// A diagnostic about something under `base` as a VM sees it: its code's
/// name for a message.
fn diagnostic(d: &Diagnostic, base: &str) -> Diagnostic {
    Diagnostic {
        code: d.code,
        severity: d.severity,
        path: inside(&d.path, base).unwrap_or_default(),
        message: d.code.name().to_owned(),
    }
}

/// The part of `path` inside the directory `base` (`.` for `base`
/// itself), when `path` is `base` or under it with plain components only.
fn inside(path: &str, base: &str) -> Option<String> {
    if base.is_empty() || !base.starts_with('/') {
        return None;
    }
    let rest = Path::new(path).strip_prefix(base).ok()?;
    if !rest.components().all(|c| matches!(c, Component::Normal(_))) {
        return None;
    }
    match rest.to_str()? {
        "" => Some(".".into()),
        r => Some(r.to_owned()),
    }
}

#[cfg(test)]
mod tests;
