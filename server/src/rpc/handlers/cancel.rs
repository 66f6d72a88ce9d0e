//! `Cancel`: end another call of this connection.

use vm_catalog_protocol::{Cancel, CancelReply};

use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `Cancel`. The cancelled call sends its own `Cancelled` error.
pub(crate) async fn handle(conn: &Conn, call_id: u32, p: Cancel) -> Result<(), CallError> {
    let found = conn.calls.cancel(p.call_id);
    conn.reply::<Cancel>(call_id, &CancelReply { found }).await
}
