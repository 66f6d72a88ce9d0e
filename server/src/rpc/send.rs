//! One connection after its handshake, as calls see it: the socket, what
//! was negotiated, the calls in flight, and sends that bound what a peer
//! that does not read can make the daemon hold.
//!
//! Sends take `&self` and each sends one whole frame (whole, whatever the
//! transport: [`super::transport`]), so the read loop
//! and every call task send on the same socket without a writer task.
//! They take turns (a fair lock per connection), and a frame is built only
//! once its turn has come: however many calls a connection has in
//! flight, at most one of its frames exists at a time (a stream's last page
//! and its end frame, sent together, count as one). Frames of one call
//! stay in order because one task sends them; frames of different calls
//! interleave, which the protocol allows.
//!
//! Before it is built, a frame claims its bytes from the reply budget
//! ([`super::Ledger`], shared by every peer, with a reserve for root and the
//! admin group and a fair share per user), and gives them back once the
//! kernel took it. Over the budget it waits, up to the send deadline, then
//! its call ends `Busy`. Frames of at most [`UNCOUNTED_FRAME`] bytes (errors,
//! `Cancel`'s reply, stream ends) claim nothing: one per connection at most
//! exists, so the connection table bounds them, and they never wait for the
//! budget.
//!
//! Every send has a deadline ([`super::Limits::send_timeout`]). A peer that
//! does not read for that long while the daemon has a frame for it is
//! disconnected: the socket is shut down, every call of the connection ends,
//! and nothing waits on that peer any more.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, FrameError, FrameKind, Streaming, Unary, build_frame, frame_len,
};

use super::admission::{Claim, Ledger, Tenant};
use super::error::CallError;
use super::in_flight::InFlight;
use super::peer::Peer;
use super::transport::FrameTx;

/// Frames of at most this many bytes are not counted against the reply
/// budget.
pub(super) const UNCOUNTED_FRAME: usize = 1024;

/// A connection, shared by its read loop and its call tasks.
#[derive(Debug)]
pub(super) struct Conn {
    /// Its sending half.
    tx: Box<dyn FrameTx>,
    /// The peer's credentials.
    pub peer: Arc<Peer>,
    /// Whose share the peer draws from.
    pub tenant: Tenant,
    /// The negotiated protocol version.
    pub version: u16,
    /// The negotiated maximum frame size.
    pub max_frame: u32,
    /// How to decode the peer's bodies.
    pub compat: Compat,
    /// How long one send may wait for the peer to read (and a frame for
    /// the reply budget).
    pub send_timeout: Duration,
    /// Calls running in their own task.
    pub calls: InFlight,
    replies: Arc<Ledger>,
    turn: Mutex<()>,
}

/// What a connection is made of after its handshake.
#[derive(Debug)]
pub(super) struct Negotiated {
    /// The negotiated protocol version.
    pub version: u16,
    /// The negotiated maximum frame size.
    pub max_frame: u32,
    /// How to decode the peer's bodies.
    pub compat: Compat,
}

impl Conn {
    /// A connection after its handshake: its frames claim their bytes from
    /// `replies` as `tenant`.
    pub(super) fn new(
        tx: Box<dyn FrameTx>,
        peer: Arc<Peer>,
        tenant: Tenant,
        negotiated: Negotiated,
        replies: Arc<Ledger>,
        send_timeout: Duration,
    ) -> Conn {
        Conn {
            tx,
            peer,
            tenant,
            version: negotiated.version,
            max_frame: negotiated.max_frame,
            compat: negotiated.compat,
            send_timeout,
            calls: InFlight::default(),
            replies,
            turn: Mutex::new(()),
        }
    }

    /// Who the replies are for: a VM sees no host paths.
    pub(super) fn audience(&self) -> crate::publish::Audience {
        if self.peer.is_vm() {
            crate::publish::Audience::Vm
        } else {
            crate::publish::Audience::Host
        }
    }

    /// Sends one frame of `len` bytes, built by `build` once it is this
    /// connection's turn and the bytes are claimed (`call_id`'s cancellation
    /// ends a wait for the budget).
    async fn send_built(
        &self,
        call_id: u32,
        len: usize,
        build: impl FnOnce() -> Result<Vec<u8>, FrameError>,
    ) -> Result<(), CallError> {
        let _turn = self.turn.lock().await;
        let _claim = self.claim_over_uncounted(call_id, len).await?;
        let frame = build().map_err(CallError::Encode)?;
        self.deadline(self.tx.send(&frame)).await
    }

    /// Sends two frames of `len` bytes together, in one turn and one send
    /// (see [`FrameTx::send_two`]), each built once the bytes are claimed.
    async fn send_built_two(
        &self,
        call_id: u32,
        len: usize,
        build: impl FnOnce() -> Result<(Vec<u8>, Vec<u8>), FrameError>,
    ) -> Result<(), CallError> {
        let _turn = self.turn.lock().await;
        let _claim = self.claim_over_uncounted(call_id, len).await?;
        let (first, second) = build().map_err(CallError::Encode)?;
        self.deadline(self.tx.send_two(&first, &second)).await
    }

    /// `len` bytes of the reply budget when they are more than
    /// [`UNCOUNTED_FRAME`].
    async fn claim_over_uncounted(
        &self,
        call_id: u32,
        len: usize,
    ) -> Result<Option<Claim>, CallError> {
        if len > UNCOUNTED_FRAME {
            Ok(Some(self.claim(call_id, len as u64).await?))
        } else {
            Ok(None)
        }
    }

    /// Runs a send within the send deadline.
    async fn deadline(&self, send: super::transport::Sending<'_>) -> Result<(), CallError> {
        match tokio::time::timeout(self.send_timeout, send).await {
            Ok(sent) => sent.map_err(CallError::Disconnected),
            Err(_) => {
                // The peer stopped reading: cut it off, so that no task (the
                // read loop, other calls, a shutdown) waits on it.
                self.tx.shutdown();
                Err(CallError::Stalled)
            }
        }
    }

    /// `n` bytes of the reply budget, waiting at most the send deadline.
    async fn claim(&self, call_id: u32, n: u64) -> Result<Claim, CallError> {
        if let Some(c) = self.replies.try_claim(self.tenant, n) {
            return Ok(c);
        }
        let cancel = self.calls.token(call_id).unwrap_or_default();
        tokio::select! {
            c = tokio::time::timeout(self.send_timeout, self.replies.claim(self.tenant, n)) => {
                c.map_err(|_| CallError::OverBudget)
            }
            _ = cancel.cancelled() => Err(CallError::Cancelled),
        }
    }

    /// Sends a frame whose body is `body`'s encoding.
    async fn send_typed<T: Serialize + ?Sized>(
        &self,
        kind: FrameKind,
        method: u16,
        call_id: u32,
        body: &T,
    ) -> Result<(), CallError> {
        let len = frame_len(body).map_err(CallError::Encode)?;
        self.send_built(call_id, len, || {
            build_frame(kind, method, call_id, len, self.max_frame, |out| {
                codec::encode_into(body, out)
            })
        })
        .await
    }

    /// Sends the reply of a unary call.
    pub(super) async fn reply<C: Unary>(
        &self,
        call_id: u32,
        reply: &C::Reply,
    ) -> Result<(), CallError> {
        self.send_typed(FrameKind::Reply, C::METHOD.id(), call_id, reply)
            .await
    }

    /// Sends the reply of a unary call whose body of `body_len` bytes
    /// `write` appends to the frame (assembled from encoded records).
    pub(super) async fn reply_with<C: Unary>(
        &self,
        call_id: u32,
        body_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CallError> {
        self.send_written(FrameKind::Reply, C::METHOD.id(), call_id, body_len, write)
            .await
    }

    /// Sends a frame of `kind` whose body of `body_len` bytes `write`
    /// appends.
    async fn send_written(
        &self,
        kind: FrameKind,
        method: u16,
        call_id: u32,
        body_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CallError> {
        let max = self.max_frame;
        self.send_built(call_id, body_len + vm_catalog_protocol::HEADER_LEN, || {
            build_frame(kind, method, call_id, body_len, max, |out| {
                write(out);
                Ok(())
            })
        })
        .await
    }

    /// Sends one item of a streaming call.
    pub(super) async fn item<C: Streaming>(
        &self,
        call_id: u32,
        item: &C::Item,
    ) -> Result<(), CallError> {
        self.send_typed(FrameKind::StreamItem, C::METHOD.id(), call_id, item)
            .await
    }

    /// Sends one item of a streaming call whose body is already encoded.
    pub(super) async fn item_raw<C: Streaming>(
        &self,
        call_id: u32,
        body: &[u8],
    ) -> Result<(), CallError> {
        self.item_with::<C>(call_id, body.len(), |out| out.extend_from_slice(body))
            .await
    }

    /// Sends one item of a streaming call whose body of `body_len` bytes
    /// `write` appends to the frame (a page assembled from encoded records,
    /// written once, into the frame).
    pub(super) async fn item_with<C: Streaming>(
        &self,
        call_id: u32,
        body_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), CallError> {
        self.send_written(
            FrameKind::StreamItem,
            C::METHOD.id(),
            call_id,
            body_len,
            write,
        )
        .await
    }

    /// Sends the last item of a streaming call, whose body of `body_len`
    /// bytes `write` appends (as [`Conn::item_with`]), and the call's end,
    /// together: the peer is woken once for both.
    pub(super) async fn last_item_with<C: Streaming>(
        &self,
        call_id: u32,
        body_len: usize,
        write: impl FnOnce(&mut Vec<u8>),
        end: &C::End,
    ) -> Result<(), CallError> {
        let method = C::METHOD.id();
        let max = self.max_frame;
        let end_len = frame_len(end).map_err(CallError::Encode)?;
        self.calls.done(call_id);
        let len = body_len + vm_catalog_protocol::HEADER_LEN + end_len;
        self.send_built_two(call_id, len, || {
            let item = build_frame(
                FrameKind::StreamItem,
                method,
                call_id,
                body_len,
                max,
                |out| {
                    write(out);
                    Ok(())
                },
            )?;
            let end = build_frame(FrameKind::StreamEnd, method, call_id, end_len, max, |out| {
                codec::encode_into(end, out)
            })?;
            Ok((item, end))
        })
        .await
    }

    /// Ends a streaming call.
    pub(super) async fn end<C: Streaming>(
        &self,
        call_id: u32,
        end: &C::End,
    ) -> Result<(), CallError> {
        self.calls.done(call_id);
        self.send_typed(FrameKind::StreamEnd, C::METHOD.id(), call_id, end)
            .await
    }

    /// Ends call `call_id` of `method` with an error (call id 0: the
    /// connection).
    pub(super) async fn error(
        &self,
        call_id: u32,
        method: u16,
        body: &ErrorBody,
    ) -> Result<(), CallError> {
        self.calls.done(call_id);
        self.send_typed(FrameKind::Error, method, call_id, body)
            .await
    }

    /// Says goodbye (the connection then closes).
    pub(super) async fn goodbye(&self, reason: &str) -> Result<(), CallError> {
        let body = vm_catalog_protocol::Goodbye {
            reason: reason.into(),
        };
        self.send_typed(FrameKind::Goodbye, 0, 0, &body).await
    }
}
