//! The stable JSON shapes of `--json` output (documented in `docs/cli.md`).
//! Field names never change; new fields may be added.

use serde_json::{Value, json};
use vm_catalog_protocol::{
    ApplyOutcome, Change, ChangeItem, Cursor, Diagnostic, Info, RescanOutcome, SourceEntry, VmEntry,
};

/// A cursor's parts.
pub(super) fn cursor_fields(c: Cursor) -> (String, u64) {
    (c.epoch.to_string(), c.generation)
}

/// A diagnostic.
pub(super) fn diagnostic(d: &Diagnostic) -> Value {
    json!({
        "code": d.code.name(),
        "severity": d.severity.as_str(),
        "path": d.path,
        "message": d.message,
    })
}

/// A VM definition.
pub(super) fn vm(e: &VmEntry) -> Value {
    json!({
        "name": e.name.as_str(),
        "source": e.source.as_str(),
        "state": e.state.as_str(),
        "path": e.path,
        "view": e.view,
        "service": e.service,
        "providers": e.providers.iter().map(|p| json!({"kind": p.kind.as_str(), "name": p.name.as_str()})).collect::<Vec<_>>(),
        "diagnostics": e.diagnostics.iter().map(diagnostic).collect::<Vec<_>>(),
        "restart_pending": e.restart_pending,
        "shadowed_by": e.shadowed_by.as_ref().map(|l| l.as_str()),
        "revision": e.revision,
        "fingerprint": e.fingerprint.map(|f| format!("{f:016x}")),
        "id": e.id.as_ref().map(|i| i.as_str()),
    })
}

/// A source.
pub(super) fn source(s: &SourceEntry) -> Value {
    json!({
        "label": s.label.as_str(),
        "kind": s.kind.as_str(),
        "trust": s.trust.as_str(),
        "path": s.path,
        "device": s.device,
        "partuuid": s.partuuid,
        "state": s.state.as_str(),
        "read_only": s.read_only,
        "precedence": s.precedence,
        "definitions": s.definitions,
        "diagnostics": s.diagnostics.iter().map(diagnostic).collect::<Vec<_>>(),
        "revision": s.revision,
    })
}

/// An apply outcome.
pub(super) fn apply(a: &ApplyOutcome) -> Value {
    json!({
        "status": a.status.as_str(),
        "generation": a.generation,
        "database": a.database,
        "services": a.services,
        "duration_us": a.duration_us,
        "message": a.message,
    })
}

/// A rescan outcome.
pub(super) fn rescan(r: &RescanOutcome) -> Value {
    json!({
        "trigger": r.trigger.as_str(),
        "dry_run": r.dry_run,
        "generation_before": r.generation_before,
        "generation": r.generation,
        "changes": r.changes,
        "started_unix_ms": r.started_unix_ms,
        "duration_us": r.duration_us,
        "apply": apply(&r.apply),
    })
}

/// The event name of a change: `added`, `removed`, `changed`,
/// `state-changed` for VMs; the same prefixed with `source-` for sources.
pub(super) fn event_name(c: &Change) -> String {
    match &c.item {
        ChangeItem::Vm(_) => c.kind.as_str().to_owned(),
        ChangeItem::Source(_) => format!("source-{}", c.kind.as_str()),
    }
}

/// A change: `event`, `generation`, and `name`/`source`/`vm` for VMs or
/// `label`/`source` for sources.
pub(super) fn change(c: &Change) -> Value {
    match &c.item {
        ChangeItem::Vm(e) => json!({
            "event": event_name(c),
            "generation": c.generation,
            "name": e.name.as_str(),
            "source": e.source.as_str(),
            "vm": vm(e),
        }),
        ChangeItem::Source(s) => json!({
            "event": event_name(c),
            "generation": c.generation,
            "label": s.label.as_str(),
            "source": source(s),
        }),
    }
}

/// `status --json`.
pub(super) fn info(i: &Info) -> Value {
    let (epoch, generation) = cursor_fields(i.cursor);
    json!({
        "server_version": i.server_version,
        "protocol_version": i.protocol_version,
        "epoch": epoch,
        "generation": generation,
        "applied_generation": i.applied_generation,
        "applier": i.applier,
        "active_vms": i.active_vms,
        "definitions": i.definitions,
        "sources": i.sources.iter().map(|s| json!({
            "label": s.label.as_str(), "kind": s.kind.as_str(), "state": s.state.as_str(), "definitions": s.definitions,
            "diagnostics": s.diagnostics.iter().map(|c| c.name()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "last_rescan": i.last_rescan.as_ref().map(rescan),
        "last_apply": i.last_apply.as_ref().map(apply),
        "connections": i.connections,
        "subscribers": i.subscribers,
        "started_unix_ms": i.started_unix_ms,
    })
}
