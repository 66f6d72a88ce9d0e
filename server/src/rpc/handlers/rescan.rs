//! `Rescan`: ask the rescan worker, then stream the changes.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{Rescan, RescanTrigger};

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `Rescan`. Cancelling (or timing out) only stops the waiting: the
/// rescan itself always completes.
pub async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: Rescan,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let result = tokio::select! {
        r = ctx.rescans.rescan(RescanTrigger::Request, p.dry_run) => r,
        _ = ctx.shutdown.cancelled() => return Err(CallError::ShuttingDown),
        _ = cancel.cancelled() => return Err(CallError::Cancelled),
    };
    let result = result.map_err(CallError::RescanFailed)?;
    let budget = records::budget(conn.max_frame);
    let changes: Vec<Vec<u8>> = result
        .changes
        .iter()
        .map(|c| records::encode_change(c, RECORD_BUDGET))
        .collect();
    let mut body = Vec::with_capacity(budget + 16);
    for run in records::split(&changes, budget) {
        body.clear();
        records::write_list(&mut body, &changes[run]);
        conn.item_raw::<Rescan>(call_id, &body).await?;
    }
    conn.end::<Rescan>(call_id, &result.outcome).await
}
