//! `vm-catalog list`.

use serde_json::json;
use vm_catalog_protocol::SourceLabel;

use super::{Failure, connect, json, out, text};
use crate::Endpoint;

/// Lists VMs.
pub(super) async fn run(
    endpoint: &Endpoint,
    all: bool,
    source: Option<SourceLabel>,
    as_json: bool,
) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let list = client.list_vms(all, source).await?;
    if as_json {
        let (epoch, generation) = json::cursor_fields(list.cursor);
        out(json!({
            "epoch": epoch,
            "generation": generation,
            "vms": list.vms.iter().map(json::vm).collect::<Vec<_>>(),
        }));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .vms
        .iter()
        .map(|e| {
            let mut row = vec![
                e.name.to_string(),
                e.source.to_string(),
                e.state.as_str().to_owned(),
                text::or_dash(e.service.as_deref()),
            ];
            if all {
                row.push(text::reason(e));
            } else if e.restart_pending {
                row.push("restart pending".into());
            }
            row
        })
        .collect();
    let header: &[&str] = if all {
        &["NAME", "SOURCE", "STATE", "SERVICE", "REASON"]
    } else {
        &["NAME", "SOURCE", "STATE", "SERVICE", "NOTE"]
    };
    for line in text::table(header, &rows) {
        out(line);
    }
    Ok(())
}
