//! `vm-catalog watch`: changes as they happen, one per line.

use serde_json::json;
use vm_catalog_protocol::Cursor;

use super::{Failure, chain, json, out, text};
use crate::{Endpoint, Watch, WatchEvent};

/// Watches until interrupted. Survives daemon restarts: after a reconnect it
/// prints what was missed (or a reset and the differences).
pub(super) async fn run(
    endpoint: &Endpoint,
    as_json: bool,
    since: Option<Cursor>,
) -> Result<(), Failure> {
    let mut watch = Watch::since(endpoint, since);
    loop {
        match watch.next().await? {
            WatchEvent::Reset {
                cursor,
                reason,
                changes,
            } => {
                if as_json {
                    out(json!({
                        "event": "reset",
                        "generation": cursor.generation,
                        "epoch": cursor.epoch.to_string(),
                        "reason": reason.as_str(),
                    }));
                } else {
                    out(format!(
                        "[{cursor}] synced ({}): {} differences",
                        reason.as_str(),
                        changes.len()
                    ));
                }
                print_changes(&changes, as_json);
            }
            WatchEvent::Resumed { from, to } => {
                if as_json {
                    out(json!({
                        "event": "resumed",
                        "generation": to.generation,
                        "epoch": to.epoch.to_string(),
                        "from": from.generation,
                    }));
                } else {
                    out(format!(
                        "[{to}] resumed from generation {}",
                        from.generation
                    ));
                }
            }
            WatchEvent::Changes { changes, .. } => print_changes(&changes, as_json),
            WatchEvent::Disconnected { error, retry_in } => {
                let generation = watch.mirror().cursor().map(|c| c.generation).unwrap_or(0);
                if as_json {
                    out(json!({
                        "event": "disconnected",
                        "generation": generation,
                        "error": chain(&error),
                        "retry_in_ms": retry_in.as_millis() as u64,
                    }));
                } else {
                    eprintln!(
                        "vm-catalog: {}; reconnecting in {} ms",
                        chain(&error),
                        retry_in.as_millis()
                    );
                }
            }
        }
    }
}

fn print_changes(changes: &[vm_catalog_protocol::Change], as_json: bool) {
    for c in changes {
        if as_json {
            out(json::change(c));
        } else {
            out(format!("[{}] {}", c.generation, text::change(c)));
        }
    }
}
