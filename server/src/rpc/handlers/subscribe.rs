//! `Subscribe`: a snapshot or the missed batches, then every batch, forever.
//!
//! The subscription's queue is bounded (see [`crate::publish`]). When it
//! overflows the hub raises the lag signal instead of waiting; this task then
//! drops the backlog and sends a fresh snapshot (`Reset { Lagged }`).
//! Snapshots are sent page by page from the generation's shared records, so
//! a subscriber holds at most one page of its own. A peer that stops reading
//! is disconnected after the send deadline.

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::records::{self, SnapshotList};
use vm_catalog_protocol::{Cursor, Event, ResetReason, Subscribe, SubscriptionEnd};

use crate::publish::{Batch, Published, Start};
use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Serves one subscription until it is cancelled (then a `StreamEnd` with
/// the last position sent), the daemon stops, or the connection breaks.
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: Subscribe,
    cancel: &CancellationToken,
) -> Result<(), CallError> {
    let (start, mut sub) = ctx.hub.subscribe(p.since);
    let mut last: Cursor = match start {
        Start::Snapshot { published, reason } => {
            send_snapshot(conn, call_id, &published, reason).await?
        }
        Start::Resume { from, batches, now } => {
            conn.item::<Subscribe>(call_id, &Event::Resumed { from })
                .await?;
            for b in &batches {
                send_batch(conn, call_id, b).await?;
            }
            conn.item::<Subscribe>(call_id, &Event::Synced { cursor: now })
                .await?;
            now
        }
    };
    loop {
        tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return Err(CallError::ShuttingDown),
            _ = cancel.cancelled() => {
                return conn.end::<Subscribe>(call_id, &SubscriptionEnd { cursor: last }).await;
            }
            _ = sub.lag.raised() => {
                let published = sub.resync();
                tracing::debug!(generation = published.cursor.generation, "subscriber lagged, resyncing");
                last = send_snapshot(conn, call_id, &published, ResetReason::Lagged).await?;
            }
            batch = sub.queue.recv() => match batch {
                // Batches after a resync are newer than its snapshot (the
                // resync empties the queue under the publish lock); the
                // check only guards that invariant.
                Some(b) if b.generation > last.generation => {
                    send_batch(conn, call_id, &b).await?;
                    last.generation = b.generation;
                }
                Some(_) => {}
                None => return Err(CallError::ShuttingDown),
            },
        }
    }
}

/// Sends `Reset`, the snapshot pages and `Synced`; returns the snapshot's cursor.
async fn send_snapshot(
    conn: &Conn,
    call_id: u32,
    p: &Published,
    reason: ResetReason,
) -> Result<Cursor, CallError> {
    conn.item::<Subscribe>(
        call_id,
        &Event::Reset {
            cursor: p.cursor,
            reason,
        },
    )
    .await?;
    let shared = p.records_for(conn.audience());
    let budget = records::budget(conn.max_frame);
    // Pages are chosen as they are sent: a slow subscriber holds the
    // snapshot and one frame.
    for (list, records) in [
        (SnapshotList::Vms, &shared.vms),
        (SnapshotList::Sources, &shared.sources),
    ] {
        let mut from = 0;
        while let Some(page) = records::next_page(records, from, budget, |_| true) {
            conn.item_with::<Subscribe>(call_id, page.snapshot_len(), |out| {
                page.write_snapshot(out, records, list)
            })
            .await?;
            from = page.end;
        }
    }
    conn.item::<Subscribe>(call_id, &Event::Synced { cursor: p.cursor })
        .await?;
    Ok(p.cursor)
}

/// Sends one generation's `Batch` frames (encoded once, shared by every
/// subscriber, split to fit the smallest frame size any peer may negotiate).
async fn send_batch(conn: &Conn, call_id: u32, b: &Batch) -> Result<(), CallError> {
    for body in b.bodies_for(conn.audience()) {
        conn.item_raw::<Subscribe>(call_id, body).await?;
    }
    Ok(())
}
