//! `vm-catalog show NAME`.

use serde_json::json;
use vm_catalog_protocol::{VmEntry, VmName};

use super::{Failure, connect, json, out, text};
use crate::Endpoint;

/// Shows one VM.
pub(super) async fn run(endpoint: &Endpoint, name: &VmName, as_json: bool) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let d = client.get_vm(name).await?;
    if as_json {
        let (epoch, generation) = json::cursor_fields(d.cursor);
        out(json!({
            "epoch": epoch,
            "generation": generation,
            "vm": json::vm(&d.vm),
            "others": d.others.iter().map(json::vm).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    describe(&d.vm);
    for other in &d.others {
        out("");
        out(format!(
            "also defined in {} ({}):",
            other.source,
            other.state.as_str()
        ));
        describe(other);
    }
    Ok(())
}

fn describe(e: &VmEntry) {
    out(format!("name:            {}", e.name));
    out(format!("source:          {}", e.source));
    out(format!("state:           {}", e.state.as_str()));
    let why = text::reason(e);
    if !why.is_empty() {
        out(format!("reason:          {why}"));
    }
    out(format!("definition:      {}", e.path));
    out(format!(
        "view:            {}",
        text::or_dash(e.view.as_deref())
    ));
    out(format!(
        "service:         {}",
        text::or_dash(e.service.as_deref())
    ));
    let providers: Vec<String> = e
        .providers
        .iter()
        .map(|p| format!("{}:{}", p.kind.as_str(), p.name))
        .collect();
    out(format!(
        "providers:       {}",
        if providers.is_empty() {
            "-".into()
        } else {
            providers.join(" ")
        }
    ));
    out(format!(
        "restart pending: {}",
        if e.restart_pending { "yes" } else { "no" }
    ));
    out(format!("revision:        {}", e.revision));
    for d in &e.diagnostics {
        out(format!(
            "  {} {}: {} ({})",
            d.severity.as_str(),
            d.code.name(),
            d.message,
            d.path
        ));
    }
}
