//! One handler per method. Each reads the published snapshot (never waiting
//! for a rescan) and sends its answer on the connection.

pub(super) mod cancel;
pub(super) mod get_vm;
pub(super) mod info;
pub(super) mod list_sources;
pub(super) mod list_vms;
pub(super) mod ping;
pub(super) mod rescan;
pub(super) mod subscribe;

use vm_catalog_protocol::Request;

use super::ctx::Ctx;
use super::send::Conn;

/// Whether `request`'s whole answer, in the current snapshot, is one item
/// and its end (then it may run in the read loop: [`super::policy::Runs`]).
pub(super) fn answers_in_one_frame(ctx: &Ctx, conn: &Conn, request: &Request) -> bool {
    match request {
        Request::ListVms(p) => list_vms::one_page(ctx, conn, p),
        Request::Ping(_)
        | Request::GetInfo(_)
        | Request::GetVm(_)
        | Request::ListSources(_)
        | Request::Rescan(_)
        | Request::Subscribe(_)
        | Request::Cancel(_) => false,
    }
}
