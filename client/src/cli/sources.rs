//! `vm-catalog sources`.

use serde_json::json;

use super::{Failure, connect, json, out, text};
use crate::Endpoint;

/// Lists the sources.
pub(super) async fn run(endpoint: &Endpoint, as_json: bool) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let list = client.sources().await?;
    if as_json {
        let (epoch, generation) = json::cursor_fields(list.cursor);
        out(json!({
            "epoch": epoch,
            "generation": generation,
            "sources": list.sources.iter().map(json::source).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .sources
        .iter()
        .map(|s| {
            vec![
                s.label.to_string(),
                s.kind.as_str().into(),
                s.trust.as_str().into(),
                s.state.as_str().into(),
                s.definitions.to_string(),
                text::or_dash(s.device.as_deref()),
                s.path.clone(),
            ]
        })
        .collect();
    for line in text::table(
        &["LABEL", "KIND", "TRUST", "STATE", "VMS", "DEVICE", "PATH"],
        &rows,
    ) {
        out(line);
    }
    for s in &list.sources {
        for d in &s.diagnostics {
            out(format!(
                "{}: {} {}: {} ({})",
                s.label,
                d.severity.as_str(),
                d.code.name(),
                d.message,
                d.path
            ));
        }
    }
    Ok(())
}
