//! `vm-catalog status`.

use super::{Failure, connect, json, out};
use crate::Endpoint;

/// Prints the daemon's status.
pub(super) async fn run(endpoint: &Endpoint, as_json: bool) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let i = client.info().await?;
    if as_json {
        out(json::info(&i));
        return Ok(());
    }
    out(format!(
        "daemon:             {} (protocol {})",
        i.server_version, i.protocol_version
    ));
    out(format!(
        "catalog:            {} (epoch:generation)",
        i.cursor
    ));
    out(format!("applied generation: {}", i.applied_generation));
    out(format!("applier:            {}", i.applier));
    out(format!(
        "VMs:                {} active, {} definitions",
        i.active_vms, i.definitions
    ));
    let sources: Vec<String> = i
        .sources
        .iter()
        .map(|s| {
            let codes: String = s
                .diagnostics
                .iter()
                .map(|c| format!(", {}", c.name()))
                .collect();
            format!(
                "{} ({}, {}, {}{codes})",
                s.label,
                s.kind.as_str(),
                s.state.as_str(),
                s.definitions
            )
        })
        .collect();
    out(format!("sources:            {}", sources.join(", ")));
    if let Some(r) = &i.last_rescan {
        out(format!(
            "last rescan:        {}{}, generation {} -> {}, {} changes, {} ms",
            r.trigger.as_str(),
            if r.dry_run { " (dry run)" } else { "" },
            r.generation_before,
            r.generation,
            r.changes,
            r.duration_us / 1000
        ));
    }
    if let Some(a) = &i.last_apply {
        out(format!(
            "last apply:         {} (generation {}): {}",
            a.status.as_str(),
            a.generation,
            a.message
        ));
    }
    out(format!(
        "clients:            {} connections, {} subscribers",
        i.connections, i.subscribers
    ));
    Ok(())
}
