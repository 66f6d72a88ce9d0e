//! One accepted connection after the handshake: the socket, what was
//! negotiated, and typed send helpers.
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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::codec::Compat;
use vm_catalog_protocol::{
    ErrorBody, FrameError, FrameKind, Streaming, Unary, frame_with_body, message,
};

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
    /// How long one send may wait for the peer to read.
    pub send_timeout: Duration,
    /// Calls running in their own task, by call id (with a serial number,
    /// since an id may be reused as soon as its terminal frame is out).
    calls: Mutex<HashMap<u32, (u64, CancellationToken)>>,
    serial: AtomicU64,
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
            calls: Mutex::new(HashMap::new()),
            serial: AtomicU64::new(0),
        }
    }

    /// Registers a call that runs in its own task; `None` if `call_id` is
    /// in flight already.
    pub fn register(&self, call_id: u32, token: CancellationToken) -> Option<u64> {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.contains_key(&call_id) {
            return None;
        }
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        calls.insert(call_id, (serial, token));
        Some(serial)
    }

    /// Whether `call_id` is in flight.
    pub fn is_in_flight(&self, call_id: u32) -> bool {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&call_id)
    }

    /// Forgets the call registered as `serial` (if its id was not reused since).
    pub fn release(&self, call_id: u32, serial: u64) {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if calls.get(&call_id).is_some_and(|(s, _)| *s == serial) {
            calls.remove(&call_id);
        }
    }

    /// The tokens of every call in flight.
    pub fn tokens(&self) -> Vec<CancellationToken> {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().map(|(_, t)| t.clone()).collect()
    }

    /// Cancels call `call_id`; whether it was in flight.
    pub fn cancel(&self, call_id: u32) -> bool {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        match calls.get(&call_id) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// Number of calls running in their own task.
    pub fn in_flight(&self) -> usize {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forgets call `call_id`, just before its terminal frame goes out: the
    /// peer may reuse the id as soon as it sees that frame.
    fn done(&self, call_id: u32) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&call_id);
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
        self.done(call_id);
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
        self.done(call_id);
        self.send(message::error(call_id, method, body, self.max_frame))
            .await
    }
}
