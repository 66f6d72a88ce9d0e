//! One connection after its handshake, as calls see it: the socket, what
//! was negotiated, the calls in flight, and sends with a deadline.
//!
//! `UnixSeqpacket` sends take `&self`, and one datagram is one frame, so the
//! read loop and every call task send on the same socket without a writer
//! task: frames of one call stay in order because one task sends them, frames
//! of different calls may interleave, which the protocol allows.
//!
//! Every send has a deadline ([`super::Limits::send_timeout`]). A peer that
//! does not read for that long while the daemon has a frame for it is
//! disconnected: the socket is shut down, every call of the connection ends,
//! and nothing waits on that peer any more.

use std::sync::Arc;
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::codec::Compat;
use vm_catalog_protocol::{
    ErrorBody, FrameError, FrameKind, Streaming, Unary, frame_with_body, message,
};

use super::error::CallError;
use super::in_flight::InFlight;
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
    /// How long one send may wait for the peer to read.
    pub send_timeout: Duration,
    /// Calls running in their own task.
    pub calls: InFlight,
}

impl Conn {
    /// A connection after its handshake.
    pub fn new(
        socket: UnixSeqpacket,
        peer: Arc<Peer>,
        version: u16,
        max_frame: u32,
        compat: Compat,
        send_timeout: Duration,
    ) -> Conn {
        Conn {
            socket,
            peer,
            version,
            max_frame,
            compat,
            send_timeout,
            calls: InFlight::default(),
        }
    }

    /// Sends one encoded frame, within the send deadline.
    pub async fn send(&self, frame: Result<Vec<u8>, FrameError>) -> Result<(), CallError> {
        let frame = frame.map_err(CallError::Encode)?;
        match tokio::time::timeout(self.send_timeout, self.socket.send(&frame)).await {
            Ok(sent) => sent.map(|_| ()).map_err(CallError::Disconnected),
            Err(_) => {
                // The peer stopped reading: cut it off, so that no task (the
                // read loop, other calls, a shutdown) waits on it.
                let _ = self.socket.shutdown(std::net::Shutdown::Both);
                Err(CallError::Stalled)
            }
        }
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
        let frame = frame_with_body(
            FrameKind::StreamItem,
            C::METHOD.id(),
            call_id,
            body,
            self.max_frame,
        );
        self.send(frame).await
    }

    /// Ends a streaming call.
    pub async fn end<C: Streaming>(&self, call_id: u32, end: &C::End) -> Result<(), CallError> {
        self.calls.done(call_id);
        self.send(message::end::<C>(call_id, end, self.max_frame))
            .await
    }

    /// Ends call `call_id` of `method` with an error (call id 0: the
    /// connection).
    pub async fn error(
        &self,
        call_id: u32,
        method: u16,
        body: &ErrorBody,
    ) -> Result<(), CallError> {
        self.calls.done(call_id);
        self.send(message::error(call_id, method, body, self.max_frame))
            .await
    }
}
