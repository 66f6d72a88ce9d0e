//! `Cancel`: end another call of this connection.

use vm_catalog_protocol::{Cancel, CancelReply};

use crate::rpc::conn::Conn;
use crate::rpc::error::CallError;

/// Answers `Cancel`. The cancelled call sends its own `Cancelled` error.
pub async fn handle(conn: &Conn, call_id: u32, p: Cancel) -> Result<(), CallError> {
    let found = conn.cancel(p.call_id);
    conn.reply::<Cancel>(call_id, &CancelReply { found }).await
}
