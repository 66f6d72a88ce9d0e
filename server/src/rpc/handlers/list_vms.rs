//! `ListVms`: one snapshot, in pages, from the generation's shared records.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::records;
use vm_catalog_protocol::{ListEnd, ListVms, VmState};

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `ListVms`. An unknown `source` gives an empty list.
pub async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: ListVms,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let shared = published.records();
    let chosen: Vec<&Vec<u8>> = published
        .vms
        .iter()
        .zip(&shared.vms)
        .filter(|(e, _)| p.include_inactive || e.state == VmState::Active)
        .filter(|(e, _)| p.source.as_ref().is_none_or(|s| &e.source == s))
        .map(|(_, r)| r)
        .collect();
    let budget = records::budget(conn.max_frame);
    let mut body = Vec::with_capacity(budget + 16);
    for run in records::split(&chosen, budget) {
        if ctx.shutdown.is_cancelled() {
            return Err(CallError::ShuttingDown);
        }
        if cancel.is_cancelled() {
            return Err(CallError::Cancelled);
        }
        body.clear();
        records::write_list(&mut body, &chosen[run]);
        conn.item_raw::<ListVms>(call_id, &body).await?;
    }
    let end = ListEnd {
        cursor: published.cursor,
        total: chosen.len() as u32,
    };
    conn.end::<ListVms>(call_id, &end).await
}
