//! One accepted connection after the handshake: the socket, what was
//! negotiated, and typed send helpers.
//!
//! `UnixSeqpacket` sends take `&self`, and one datagram is one frame, so the
//! read loop and every call task send on the same socket without a writer
//! task: frames of one call stay in order because one task sends them, frames
//! of different calls may interleave, which the protocol allows.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::codec::Compat;
use vm_catalog_protocol::{ErrorBody, FrameError, Streaming, Unary, message};

use super::error::CallError;
use super::peer::Peer;

/// A connection, shared by its read loop and its call tasks.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub socket: UnixSeqpacket,
    /// The peer's credentials.
    pub peer: Arc<Peer>,
    /// The negotiated protocol version.
    pub version: u16,
    /// The negotiated maximum frame size.
    pub max_frame: u32,
    /// How to decode the peer's bodies.
    pub compat: Compat,
    /// Calls running in their own task, by call id, for `Cancel`.
    pub calls: Mutex<HashMap<u32, CancellationToken>>,
}

impl Conn {
    /// Cancels call `call_id`; whether it was in flight.
    pub fn cancel(&self, call_id: u32) -> bool {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        match calls.get(&call_id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Sends one encoded frame.
    pub async fn send(&self, frame: Result<Vec<u8>, FrameError>) -> Result<(), CallError> {
        let frame = frame.map_err(CallError::Encode)?;
        self.socket
            .send(&frame)
            .await
            .map_err(CallError::Disconnected)?;
        Ok(())
    }

    /// Sends the reply of a unary call.
    pub async fn reply<C: Unary>(&self, call_id: u32, reply: &C::Reply) -> Result<(), CallError> {
        self.send(message::reply::<C>(call_id, reply, self.max_frame))
            .await
    }

    /// Sends one item of a streaming call.
    pub async fn item<C: Streaming>(&self, call_id: u32, item: &C::Item) -> Result<(), CallError> {
        self.send(message::item::<C>(call_id, item, self.max_frame))
            .await
    }

    /// Sends one item of a streaming call whose body is already encoded.
    pub async fn item_raw<C: Streaming>(&self, call_id: u32, body: &[u8]) -> Result<(), CallError> {
        let mut frame = Vec::with_capacity(vm_catalog_protocol::HEADER_LEN + body.len());
        frame.extend_from_slice(
            &vm_catalog_protocol::Header {
                kind: vm_catalog_protocol::FrameKind::StreamItem,
                flags: 0,
                method: C::METHOD.id(),
                call_id,
                body_len: body.len() as u32,
            }
            .to_bytes(),
        );
        frame.extend_from_slice(body);
        if frame.len() > self.max_frame as usize {
            return Err(CallError::Encode(FrameError::TooLarge {
                len: frame.len(),
                max: self.max_frame,
            }));
        }
        self.socket
            .send(&frame)
            .await
            .map_err(CallError::Disconnected)?;
        Ok(())
    }

    /// Ends a streaming call.
    pub async fn end<C: Streaming>(&self, call_id: u32, end: &C::End) -> Result<(), CallError> {
        self.send(message::end::<C>(call_id, end, self.max_frame))
            .await
    }

    /// Ends call `call_id` of `method` with an error.
    pub async fn error(
        &self,
        call_id: u32,
        method: u16,
        body: &ErrorBody,
    ) -> Result<(), CallError> {
        self.send(message::error(call_id, method, body, self.max_frame))
            .await
    }
}
