//! `ListVms`: one snapshot, in pages, from the generation's shared records.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::records;
use vm_catalog_protocol::{ListEnd, ListVms, VmState};

use crate::publish::Published;
use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Whether the answer to `p` in the current snapshot is one page (or
/// none) and its end.
pub(crate) fn one_page(ctx: &Ctx, conn: &Conn, p: &ListVms) -> bool {
    let published = ctx.hub.current();
    let shared = published.records_for(conn.audience());
    let keep = keep(&published, p);
    let budget = records::budget(conn.max_frame);
    records::next_page(&shared.vms, 0, budget, keep)
        .is_none_or(|page| records::next_page(&shared.vms, page.end, budget, keep).is_none())
}

/// Which entries `p` asks for, by index.
fn keep<'a>(published: &'a Published, p: &'a ListVms) -> impl Fn(usize) -> bool + Copy + 'a {
    move |i: usize| {
        let e = &published.vms[i];
        (p.include_inactive || e.state == VmState::Active)
            && p.source.as_ref().is_none_or(|s| &e.source == s)
    }
}

/// Answers `ListVms`. An unknown `source` gives an empty list. Pages are
/// chosen as they are sent: the call holds the snapshot and one frame, not a
/// list of what it chose (a peer may have many such calls that it never
/// reads).
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: ListVms,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let shared = published.records_for(conn.audience());
    let keep = keep(&published, &p);
    let budget = records::budget(conn.max_frame);
    let mut total = 0u32;
    let mut next = records::next_page(&shared.vms, 0, budget, keep);
    while let Some(page) = next {
        if ctx.shutdown.is_cancelled() {
            return Err(CallError::ShuttingDown);
        }
        if cancel.is_cancelled() {
            return Err(CallError::Cancelled);
        }
        total += page.count as u32;
        next = records::next_page(&shared.vms, page.end, budget, keep);
        let write = |out: &mut Vec<u8>| page.write_list(out, &shared.vms, keep);
        if next.is_none() {
            // The last page goes out with the end, in one send.
            let end = ListEnd {
                cursor: published.cursor,
                total,
            };
            return conn
                .last_item_with::<ListVms>(call_id, page.list_len(), write, &end)
                .await;
        }
        conn.item_with::<ListVms>(call_id, page.list_len(), write)
            .await?;
    }
    let end = ListEnd {
        cursor: published.cursor,
        total,
    };
    conn.end::<ListVms>(call_id, &end).await
}
