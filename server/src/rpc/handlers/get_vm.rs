//! `GetVm`: one VM and every other definition of its name.

use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{GetVm, VmDetail};

use crate::publish::Audience;

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `GetVm`. Every definition of the name is sent; each is trimmed
/// (diagnostics, then providers, with a `truncated` note) so that together
/// they fit one frame. When each may take a whole record (a frame of the
/// default size, a few definitions), the reply is put together from the
/// generation's records, as `ListVms` pages are.
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: GetVm,
) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let (pick, others) = published
        .lookup_at(&p.name)
        .ok_or(CallError::NotFound(p.name))?;
    let audience: Audience = conn.audience();
    // One name has at most one definition per source.
    let each = (records::budget(conn.max_frame) / (1 + others.len())).min(RECORD_BUDGET);
    if each == RECORD_BUDGET {
        // Each record is the one `fit_vm(.., RECORD_BUDGET)` gives.
        let shared = published.records_for(audience);
        let vm = &shared.vms[pick];
        let others: Vec<&[u8]> = others.iter().map(|&i| &*shared.vms[i]).collect();
        let len = records::detail_len(published.cursor, vm, &others);
        return conn
            .reply_with::<GetVm>(call_id, len, |out| {
                records::write_detail(out, published.cursor, vm, &others)
            })
            .await;
    }
    let detail = VmDetail {
        cursor: published.cursor,
        vm: records::fit_vm(&audience.vm(&published.vms[pick]), each).into_owned(),
        others: others
            .into_iter()
            .map(|i| records::fit_vm(&audience.vm(&published.vms[i]), each).into_owned())
            .collect(),
    };
    conn.reply::<GetVm>(call_id, &detail).await
}
