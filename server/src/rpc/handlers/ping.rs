//! `Ping`: echo the payload.

use vm_catalog_protocol::{Ping, Pong};

use crate::rpc::error::CallError;
use crate::rpc::send::Conn;

/// Answers `Ping`.
pub(crate) async fn handle(conn: &Conn, call_id: u32, p: Ping) -> Result<(), CallError> {
    conn.reply::<Ping>(call_id, &Pong { payload: p.payload })
        .await
}
