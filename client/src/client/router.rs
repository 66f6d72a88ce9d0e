//! The connection a [`super::Client`] and its streams share: the sending
//! half of the transport, the [`Session`], the table of calls in flight,
//! and the reader task that owns the receiving half and routes every frame
//! into the bounded queue of its call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::session::{CallFrame, Closed, Inbound, Session};
use crate::transport::conn::{Receiver, Sender};
use tokio::sync::mpsc;

/// Frames queued per call before the reader stops reading the socket.
const CALL_QUEUE: usize = 64;
/// How long the reader waits for a call whose queue is full before it ends
/// that call with [`Error::Overflow`].
const STREAM_STALL: Duration = Duration::from_secs(1);

/// What a call's queue carries.
#[derive(Debug)]
pub(super) enum Incoming {
    /// A frame of the call.
    Frame {
        /// What it is.
        kind: CallFrame,
        /// Its undecoded body.
        body: Vec<u8>,
    },
    /// The connection ended before the call did.
    Closed(Closed),
}

/// The shared state of one connection.
#[derive(Debug)]
pub(super) struct Inner {
    sender: Sender,
    /// What the handshake granted.
    pub(super) session: Session,
    calls: Mutex<HashMap<u32, mpsc::Sender<Incoming>>>,
    next_id: AtomicU32,
    closed: Mutex<Option<Closed>>,
}

/// Locks, whether or not a holder panicked (the table stays consistent).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// The state of a connection whose handshake is done.
    pub(super) fn new(sender: Sender, session: Session) -> Self {
        Inner {
            sender,
            session,
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: Mutex::new(None),
        }
    }

    /// Registers a new call id.
    pub(super) fn register(&self) -> Result<(u32, mpsc::Receiver<Incoming>)> {
        // Lock order: calls, then closed (as in `close`), so no call is
        // registered after the reader drained the table.
        let mut calls = lock(&self.calls);
        if let Some(c) = lock(&self.closed).as_ref() {
            return Err(c.to_error());
        }
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !calls.contains_key(&id) {
                let (tx, rx) = mpsc::channel(CALL_QUEUE);
                calls.insert(id, tx);
                return Ok((id, rx));
            }
        }
    }

    /// Why a call's queue ended without a terminal frame.
    pub(super) fn ended(&self) -> Error {
        match lock(&self.closed).as_ref() {
            Some(c) => c.to_error(),
            // The reader dropped the queue: the call did not read in time.
            None => Error::Overflow,
        }
    }

    /// Forgets call `id`: its frames are dropped from now on.
    pub(super) fn unregister(&self, id: u32) {
        lock(&self.calls).remove(&id);
    }

    /// Sends one frame.
    pub(super) async fn send(&self, frame: Result<Vec<u8>>) -> Result<()> {
        self.sender
            .send(frame?)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))
    }

    /// Tells the daemon to stop sending the frames of call `target`, in the
    /// background (best effort, needs a runtime).
    pub(super) fn cancel(self: &Arc<Self>, target: u32) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let inner = self.clone();
        rt.spawn(async move {
            if let Ok((id, _rx)) = inner.register() {
                let _ = inner.send(inner.session.cancel(id, target)).await;
                inner.unregister(id);
            }
        });
    }

    /// Ends the connection for every call: the calls in flight and any
    /// registered later learn why.
    pub(super) fn close(&self, why: Closed) {
        let calls: Vec<_> = {
            let mut calls = lock(&self.calls);
            *lock(&self.closed) = Some(why.clone());
            calls.drain().collect()
        };
        for (_, tx) in calls {
            let _ = tx.try_send(Incoming::Closed(why.clone()));
        }
    }

    /// Ends the connection from this side (the client is dropped): calls
    /// end as disconnected, and the daemon sees the connection go.
    pub(super) fn shut_down(&self) {
        let mut calls = lock(&self.calls);
        lock(&self.closed).get_or_insert(Closed::Eof);
        calls.clear();
        self.sender.shutdown();
    }

    /// Hands a frame to its call, if the call is still there. Waits a little
    /// while the call's queue is full (backpressure); a stream nobody reads
    /// must not stall every other call of the connection, so after
    /// [`STREAM_STALL`] the call is dropped and cancelled.
    async fn deliver(self: &Arc<Self>, call_id: u32, kind: CallFrame, body: &[u8]) {
        let tx = {
            let mut calls = lock(&self.calls);
            if kind.is_terminal() {
                calls.remove(&call_id)
            } else {
                calls.get(&call_id).cloned()
            }
        };
        let Some(tx) = tx else {
            return;
        };
        let item = Incoming::Frame {
            kind,
            body: body.to_vec(),
        };
        if tokio::time::timeout(STREAM_STALL, tx.send(item))
            .await
            .is_err()
        {
            self.unregister(call_id);
            self.cancel(call_id);
        }
    }
}

/// The reader task: routes frames until the connection ends, then tells
/// every call why.
pub(super) async fn read_loop(inner: Arc<Inner>, mut receiver: Receiver) {
    receiver.set_max_frame(inner.session.max_frame());
    let closed = loop {
        let frame = match receiver.recv().await {
            Ok(frame) => frame,
            Err(closed) => break closed,
        };
        match inner.session.classify(frame) {
            Inbound::Call {
                call_id,
                kind,
                body,
            } => inner.deliver(call_id, kind, body).await,
            Inbound::Closed(closed) => break closed,
        }
    };
    inner.close(closed);
}
