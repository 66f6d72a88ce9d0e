//! `ListSources`: every source in precedence order.

use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{ListSources, SourceList};

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `ListSources`. Each source is trimmed (its diagnostics, with a
/// `truncated` note) so that together they fit one frame.
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    _: ListSources,
) -> Result<(), CallError> {
    let p = ctx.hub.current();
    let each = (records::budget(conn.max_frame) / p.sources.len().max(1)).min(RECORD_BUDGET);
    let list = SourceList {
        cursor: p.cursor,
        sources: p
            .sources
            .iter()
            .map(|s| records::fit_source(&conn.audience().source(s), each).into_owned())
            .collect(),
    };
    conn.reply::<ListSources>(call_id, &list).await
}
