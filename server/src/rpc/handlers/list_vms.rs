//! `ListVms`: one snapshot, in pages.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::{ListEnd, ListVms, VmState};

use crate::rpc::Ctx;
use crate::rpc::conn::Conn;
use crate::rpc::error::CallError;
use crate::rpc::pages;

/// Answers `ListVms`.
pub async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: ListVms,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let budget = pages::budget(conn.max_frame);
    let records: Vec<Vec<u8>> = published
        .vms
        .iter()
        .filter(|e| p.include_inactive || e.state == VmState::Active)
        .filter(|e| p.source.as_ref().is_none_or(|s| &e.source == s))
        .map(|e| pages::encode_vm(e, budget))
        .collect();
    let mut body = Vec::with_capacity(budget + 16);
    for run in pages::split(&records, budget) {
        if cancel.is_cancelled() {
            return Err(CallError::Cancelled);
        }
        body.clear();
        pages::write_list(&mut body, &records[run]);
        conn.item_raw::<ListVms>(call_id, &body).await?;
    }
    let end = ListEnd {
        cursor: published.cursor,
        total: records.len() as u32,
    };
    conn.end::<ListVms>(call_id, &end).await
}
