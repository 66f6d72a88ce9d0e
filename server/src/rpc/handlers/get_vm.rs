//! `GetVm`: one VM and every other definition of its name.

use vm_catalog_protocol::{GetVm, VmDetail};

use crate::rpc::Ctx;
use crate::rpc::conn::Conn;
use crate::rpc::error::CallError;
use crate::rpc::pages;

/// Answers `GetVm`.
pub async fn handle(ctx: &Ctx, conn: &Conn, call_id: u32, p: GetVm) -> Result<(), CallError> {
    let published = ctx.hub.current();
    let (vm, others) = published
        .lookup(&p.name)
        .ok_or_else(|| CallError::NotFound(p.name.to_string()))?;
    // Each entry alone fits; many definitions of one name could still
    // overflow the frame, so trim what would not fit.
    let budget = pages::budget(conn.max_frame);
    let mut used = pages::encode_vm(vm, budget / 2).len();
    let mut kept = Vec::new();
    for e in others {
        let len = pages::encode_vm(e, budget / 2).len() + 5;
        if used + len > budget {
            break;
        }
        used += len;
        kept.push(e.clone());
    }
    let detail = VmDetail {
        cursor: published.cursor,
        vm: vm.clone(),
        others: kept,
    };
    conn.reply::<GetVm>(call_id, &detail).await
}
