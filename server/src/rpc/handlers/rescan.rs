//! `Rescan`: ask the rescan worker, then stream the changes.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{Rescan, RescanTrigger};

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `Rescan`. Cancelling (or timing out) only stops the waiting: the
/// rescan itself always completes.
pub(crate) async fn handle(
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
    // Change records are encoded page by page as they are sent: a caller
    // holds its result and one page, not a second copy of every change.
    let budget = records::budget(conn.max_frame);
    let mut page: Vec<Vec<u8>> = Vec::new();
    let mut size = 0;
    for c in &result.changes {
        let r = records::encode_change(c, RECORD_BUDGET);
        let len = records::record_len(&r);
        if !page.is_empty() && size + len > budget {
            send_page(conn, call_id, &page).await?;
            page.clear();
            size = 0;
        }
        size += len;
        page.push(r);
    }
    if !page.is_empty() {
        send_page(conn, call_id, &page).await?;
    }
    conn.end::<Rescan>(call_id, &result.outcome).await
}

async fn send_page(conn: &Conn, call_id: u32, page: &[Vec<u8>]) -> Result<(), CallError> {
    conn.item_with::<Rescan>(call_id, records::list_len(page), |out| {
        records::write_list(out, page)
    })
    .await
}
