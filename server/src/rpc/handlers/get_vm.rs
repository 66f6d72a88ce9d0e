//! `GetVm`: one VM and every other definition of its name.

use vm_catalog_protocol::records::{self, RECORD_BUDGET};
use vm_catalog_protocol::{GetVm, VmDetail};

use crate::publish::Audience;

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `GetVm`. Every definition of the name is sent; each is trimmed
/// (diagnostics, then providers, with a `truncated` note) so that together
/// they fit one frame.
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    p: GetVm,
) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let (vm, others) = published
        .lookup(&p.name)
        .ok_or(CallError::NotFound(p.name))?;
    let audience: Audience = conn.audience();
    // One name has at most one definition per source.
    let each = (records::budget(conn.max_frame) / (1 + others.len())).min(RECORD_BUDGET);
    let detail = VmDetail {
        cursor: published.cursor,
        vm: records::fit_vm(&audience.vm(vm), each).into_owned(),
        others: others
            .into_iter()
            .map(|e| records::fit_vm(&audience.vm(e), each).into_owned())
            .collect(),
    };
    conn.reply::<GetVm>(call_id, &detail).await
}
