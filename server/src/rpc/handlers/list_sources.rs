//! `ListSources`: every source in precedence order.

use vm_catalog_protocol::{ListSources, SourceList};

use crate::rpc::Ctx;
use crate::rpc::conn::Conn;
use crate::rpc::error::CallError;
use crate::rpc::pages;

/// Answers `ListSources`. Each source is trimmed (its diagnostics, with a
/// `truncated` note) so that together they fit one frame.
pub async fn handle(ctx: &Ctx, conn: &Conn, call_id: u32, _: ListSources) -> Result<(), CallError> {
    let p = ctx.hub.current();
    let each = (pages::budget(conn.max_frame) / p.sources.len().max(1)).min(pages::RECORD_BUDGET);
    let list = SourceList {
        cursor: p.cursor,
        sources: p
            .sources
            .iter()
            .map(|s| pages::fit_source(s, each).into_owned())
            .collect(),
    };
    conn.reply::<ListSources>(call_id, &list).await
}
