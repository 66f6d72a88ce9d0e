//! `GetInfo`: the daemon's state.

use vm_catalog_protocol::{GetInfo, Info, SourceSummary};

use crate::publish::{Audience, vm_view};

use crate::rpc::ctx::Ctx;
use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `GetInfo`.
pub(crate) async fn handle(
    ctx: &Ctx,
    conn: &Conn,
    call_id: u32,
    _: GetInfo,
) -> Result<(), CallError> {
    let p = ctx.hub.current();
    let status = ctx.hub.status();
    let info = Info {
        server_version: ctx.server.version.clone(),
        protocol_version: conn.version,
        cursor: p.cursor,
        applied_generation: status.applied_generation,
        applier: ctx.server.applier.to_string(),
        active_vms: p.active_count() as u32,
        definitions: p.vms.len() as u32,
        sources: p.sources.iter().map(SourceSummary::of).collect(),
        last_rescan: status.last_rescan.clone(),
        last_apply: status.last_apply.clone(),
        connections: ctx.open_connections(),
        subscribers: ctx.hub.subscriber_count() as u32,
        started_unix_ms: ctx.server.started_unix_ms,
    };
    match conn.audience() {
        Audience::Host => conn.reply::<GetInfo>(call_id, &info).await,
        Audience::Vm => conn.reply::<GetInfo>(call_id, &vm_view::info(&info)).await,
    }
}
