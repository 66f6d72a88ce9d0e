//! `ListSources`: every source in precedence order.

use vm_catalog_protocol::{ListSources, SourceList};

use crate::rpc::Ctx;
use crate::rpc::conn::Conn;
use crate::rpc::error::CallError;

/// Answers `ListSources`.
pub async fn handle(ctx: &Ctx, conn: &Conn, call_id: u32, _: ListSources) -> Result<(), CallError> {
    let p = ctx.hub.current();
    let list = SourceList {
        cursor: p.cursor,
        sources: p.sources.clone(),
    };
    conn.reply::<ListSources>(call_id, &list).await
}
