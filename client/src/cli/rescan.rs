//! `vm-catalog rescan`.

use serde_json::json;

use super::{EXIT_FAILURE, Failure, connect, json, out, text};
use crate::Endpoint;

/// Rescans and prints the change batch.
pub(super) async fn run(endpoint: &Endpoint, dry_run: bool, as_json: bool) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let r = client.rescan(dry_run).await?;
    let o = &r.outcome;
    if as_json {
        // As `status`'s last_rescan, with the change list in place of the count.
        let mut v = json::rescan(o);
        v["changed"] = json!(!r.changes.is_empty());
        v["changes"] = json!(r.changes.iter().map(json::change).collect::<Vec<_>>());
        out(v);
    } else {
        if r.changes.is_empty() {
            out(format!("nothing changed (generation {})", o.generation));
        } else if o.dry_run {
            out(format!(
                "dry run: {} changes against generation {}",
                r.changes.len(),
                o.generation_before
            ));
        } else {
            out(format!(
                "generation {} -> {}: {} changes",
                o.generation_before,
                o.generation,
                r.changes.len()
            ));
        }
        for c in &r.changes {
            out(format!("  {}", text::change(c)));
        }
        if !o.dry_run {
            out(format!(
                "apply: {}: {}",
                o.apply.status.as_str(),
                o.apply.message
            ));
        }
    }
    if o.apply.status.is_failure() {
        return Err(Failure {
            message: format!("apply failed: {}", o.apply.message),
            code: EXIT_FAILURE,
        });
    }
    Ok(())
}
