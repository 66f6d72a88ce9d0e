//! The async client: one connection, many calls in flight.
//!
//! A background task reads every frame and routes it by call id to the call
//! that waits for it. Each call has a bounded queue: a caller that stops
//! reading a stream stops the reader task, the kernel buffers fill, and the
//! daemon notices (for a subscription: it drops the backlog and later sends a
//! fresh snapshot). Nothing grows without bound on either side.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    DEFAULT_MAX_FRAME, ErrorBody, ErrorCode, Features, FrameKind, Goodbye, HANDSHAKE_MAX_FRAME,
    Hello, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Streaming, Unary, Welcome, decode_frame, message,
};

use crate::error::{Error, Result, Versions};

/// Frames queued per call before the reader stops reading the socket.
const CALL_QUEUE: usize = 64;
/// How long the reader waits for a call whose queue is full before it ends
/// that call with [`Error::Overflow`].
const STREAM_STALL: Duration = Duration::from_secs(1);

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Sent in `Hello`, for the daemon's logs.
    pub client_name: String,
    /// The largest frame to ask for.
    pub max_frame: u32,
    /// Time allowed for connecting and the handshake.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_name: format!("vm-catalog/{}", env!("CARGO_PKG_VERSION")),
            max_frame: DEFAULT_MAX_FRAME,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why the connection ended, as every pending call learns it.
#[derive(Debug, Clone)]
enum Closed {
    Eof,
    Io(Arc<std::io::Error>),
    Goodbye(String),
    Refused(ErrorBody),
    Protocol(String),
}

impl Closed {
    fn to_error(&self) -> Error {
        match self {
            Closed::Eof => Error::Disconnected(None),
            Closed::Io(e) => {
                Error::Disconnected(Some(std::io::Error::new(e.kind(), e.to_string())))
            }
            Closed::Goodbye(r) => Error::Goodbye(r.clone()),
            Closed::Refused(b) => Error::Daemon(b.clone()),
            Closed::Protocol(p) => Error::Protocol(p.clone()),
        }
    }
}

#[derive(Debug)]
enum Incoming {
    Frame { kind: FrameKind, body: Vec<u8> },
    Closed(Closed),
}

#[derive(Debug)]
struct Inner {
    socket: UnixSeqpacket,
    welcome: Welcome,
    compat: Compat,
    calls: Mutex<HashMap<u32, mpsc::Sender<Incoming>>>,
    next_id: AtomicU32,
    closed: Mutex<Option<Closed>>,
}

impl Inner {
    /// Registers a new call id.
    fn register(&self) -> Result<(u32, mpsc::Receiver<Incoming>)> {
        // Lock order: calls, then closed (as in `read_loop`), so no call is
        // registered after the reader drained the table.
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
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
    fn ended(&self) -> Error {
        match self
            .closed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            Some(c) => c.to_error(),
            // The reader dropped the queue: the call did not read in time.
            None => Error::Overflow,
        }
    }

    fn unregister(&self, id: u32) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
    }

    async fn send(
        &self,
        frame: std::result::Result<Vec<u8>, vm_catalog_protocol::FrameError>,
    ) -> Result<()> {
        let frame = frame.map_err(Error::Frame)?;
        self.socket
            .send(&frame)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        Ok(())
    }
}

/// The `Hello` frame for `opts`.
pub(crate) fn hello_frame(opts: &ConnectOptions) -> Result<Vec<u8>> {
    let hello = Hello {
        client: opts.client_name.clone(),
        versions: SUPPORTED_VERSIONS,
        max_frame: opts.max_frame,
        features: Features::KNOWN,
    };
    message::hello(&hello).map_err(Error::Frame)
}

/// Reads the daemon's answer to `Hello`: its `Welcome`, or why not.
pub(crate) fn read_welcome(datagram: &[u8]) -> Result<Welcome> {
    if datagram.is_empty() {
        return Err(Error::Disconnected(None));
    }
    let frame = decode_frame(datagram, HANDSHAKE_MAX_FRAME)
        .map_err(|e| Error::Protocol(format!("bad answer to Hello: {e}")))?;
    let lenient = |body: &[u8]| -> Result<ErrorBody> {
        codec::decode(body, Compat::Record).map_err(|e| Error::Protocol(e.to_string()))
    };
    match frame.header.kind {
        FrameKind::Welcome => codec::decode(frame.body, Compat::Record)
            .map_err(|e| Error::Protocol(format!("bad Welcome: {e}"))),
        FrameKind::Error => {
            let body = lenient(frame.body)?;
            if body.code == ErrorCode::UnsupportedVersion {
                return Err(Error::Incompatible {
                    server: Versions(body.supported),
                    client: Versions(Some(SUPPORTED_VERSIONS)),
                });
            }
            Err(Error::Daemon(body))
        }
        FrameKind::Goodbye => {
            let g: Goodbye = codec::decode(frame.body, Compat::Record)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            Err(Error::Goodbye(g.reason))
        }
        k => Err(Error::Protocol(format!("expected Welcome, got {k:?}"))),
    }
}

/// A connection to `vm-catalogd`.
///
/// ```no_run
/// # async fn demo() -> vm_catalog::Result<()> {
/// let client = vm_catalog::Client::connect("/run/vm-catalog/socket").await?;
/// let vm = client.get_vm(&"netvm".parse().unwrap()).await?;
/// println!("{} comes from {}", vm.vm.name, vm.vm.source);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Client {
    inner: Arc<Inner>,
    reader: JoinHandle<()>,
    path: PathBuf,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.reader.abort();
        // Streams that outlive the client end (they hold `Inner`, not the
        // reader), and the daemon sees the connection go.
        let mut calls = self.inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        let mut closed = self.inner.closed.lock().unwrap_or_else(|e| e.into_inner());
        closed.get_or_insert(Closed::Eof);
        calls.clear();
        let _ = self.inner.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Client {
    /// Connects with default options.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Self::connect_with(path, &ConnectOptions::default()).await
    }

    /// Connects and completes the handshake.
    pub async fn connect_with(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<Client> {
        let path = path.as_ref().to_owned();
        match tokio::time::timeout(opts.timeout, Self::handshake(&path, opts)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable {
                path,
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to Hello"),
            }),
        }
    }

    async fn handshake(path: &Path, opts: &ConnectOptions) -> Result<Client> {
        let socket = UnixSeqpacket::connect(path)
            .await
            .map_err(|source| Error::Unreachable {
                path: path.to_owned(),
                source,
            })?;
        socket
            .send(&hello_frame(opts)?)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize + 1];
        let info = socket
            .recv(&mut buf)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        let welcome = read_welcome(&buf[..info.bytes_read()])?;
        let inner = Arc::new(Inner {
            socket,
            compat: Compat::between(PROTOCOL_VERSION, welcome.supported.max),
            welcome,
            calls: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(1),
            closed: Mutex::new(None),
        });
        let reader = tokio::spawn(read_loop(inner.clone()));
        Ok(Client {
            inner,
            reader,
            path: path.to_owned(),
        })
    }

    /// The daemon's `Welcome`: version, epoch, max frame, features.
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// The socket path this client connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a unary call.
    pub async fn call<C: Unary>(&self, params: &C) -> Result<C::Reply> {
        let (id, mut rx) = self.inner.register()?;
        let guard = Unregister {
            inner: &self.inner,
            id,
        };
        self.inner
            .send(message::request(id, params, self.inner.welcome.max_frame))
            .await?;
        let reply = match rx.recv().await {
            Some(Incoming::Frame {
                kind: FrameKind::Reply,
                body,
            }) => self.decode(&body),
            Some(Incoming::Frame {
                kind: FrameKind::Error,
                body,
            }) => Err(Error::Daemon(self.decode(&body)?)),
            Some(Incoming::Frame { kind, .. }) => Err(Error::Protocol(format!(
                "unexpected {kind:?} for a unary call"
            ))),
            Some(Incoming::Closed(c)) => Err(c.to_error()),
            None => Err(self.inner.ended()),
        };
        drop(guard);
        reply
    }

    /// Starts a streaming call.
    pub async fn stream<C: Streaming>(&self, params: &C) -> Result<CallStream<C>> {
        let (id, rx) = self.inner.register()?;
        let stream = CallStream {
            inner: self.inner.clone(),
            id,
            rx,
            end: None,
            done: false,
        };
        self.inner
            .send(message::request(id, params, self.inner.welcome.max_frame))
            .await?;
        Ok(stream)
    }

    fn decode<T: serde::de::DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        codec::decode(body, self.inner.compat).map_err(|e| Error::Protocol(e.to_string()))
    }
}

struct Unregister<'a> {
    inner: &'a Inner,
    id: u32,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.inner.unregister(self.id);
    }
}

/// The frames of one streaming call: items, then the end.
#[derive(Debug)]
pub struct CallStream<C: Streaming> {
    inner: Arc<Inner>,
    id: u32,
    rx: mpsc::Receiver<Incoming>,
    end: Option<C::End>,
    done: bool,
}

impl<C: Streaming> CallStream<C> {
    /// The call id.
    pub fn call_id(&self) -> u32 {
        self.id
    }

    /// The next item; `None` after the end frame (see [`CallStream::end`]).
    pub async fn next(&mut self) -> Option<Result<C::Item>> {
        if self.done {
            return None;
        }
        let compat = self.inner.compat;
        fn decode<T: serde::de::DeserializeOwned>(body: &[u8], compat: Compat) -> Result<T> {
            codec::decode(body, compat).map_err(|e| Error::Protocol(e.to_string()))
        }
        let r = match self.rx.recv().await {
            Some(Incoming::Frame {
                kind: FrameKind::StreamItem,
                body,
            }) => {
                return Some(decode(&body, compat));
            }
            Some(Incoming::Frame {
                kind: FrameKind::StreamEnd,
                body,
            }) => match decode(&body, compat) {
                Ok(end) => {
                    self.end = Some(end);
                    self.done = true;
                    return None;
                }
                Err(e) => Err(e),
            },
            Some(Incoming::Frame {
                kind: FrameKind::Error,
                body,
            }) => match decode::<ErrorBody>(&body, compat) {
                Ok(b) => Err(Error::Daemon(b)),
                Err(e) => Err(e),
            },
            Some(Incoming::Frame { kind, .. }) => {
                Err(Error::Protocol(format!("unexpected {kind:?} in a stream")))
            }
            Some(Incoming::Closed(c)) => Err(c.to_error()),
            None => Err(self.inner.ended()),
        };
        self.done = true;
        Some(r)
    }

    /// The end frame's body, once [`CallStream::next`] returned `None`.
    pub fn end(&self) -> Option<&C::End> {
        self.end.as_ref()
    }

    /// Takes the end frame's body.
    pub fn into_end(self) -> Option<C::End> {
        let mut s = self;
        s.end.take()
    }
}

impl<C: Streaming> Drop for CallStream<C> {
    fn drop(&mut self) {
        self.inner.unregister(self.id);
        if !self.done {
            // Tell the daemon to stop sending (best effort, needs a runtime).
            let inner = self.inner.clone();
            let id = self.id;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if let Ok((cid, _rx)) = inner.register() {
                        let cancel = vm_catalog_protocol::Cancel { call_id: id };
                        let _ = inner
                            .send(message::request(cid, &cancel, inner.welcome.max_frame))
                            .await;
                        inner.unregister(cid);
                    }
                });
            }
        }
    }
}

async fn read_loop(inner: Arc<Inner>) {
    let mut buf = vec![0u8; inner.welcome.max_frame as usize + 1];
    let closed = loop {
        let info = match inner.socket.recv(&mut buf).await {
            Ok(i) => i,
            Err(e) => break Closed::Io(Arc::new(e)),
        };
        let n = info.bytes_read();
        if n == 0 {
            break Closed::Eof;
        }
        if info.truncated() {
            break Closed::Protocol("the daemon sent a frame larger than negotiated".into());
        }
        let frame = match decode_frame(&buf[..n], inner.welcome.max_frame) {
            Ok(f) => f,
            Err(e) => break Closed::Protocol(e.to_string()),
        };
        let h = frame.header;
        match h.kind {
            FrameKind::Goodbye => {
                let reason = codec::decode::<Goodbye>(frame.body, Compat::Record)
                    .map(|g| g.reason)
                    .unwrap_or_else(|_| "goodbye".into());
                break Closed::Goodbye(reason);
            }
            FrameKind::Error if h.call_id == 0 => {
                match codec::decode::<ErrorBody>(frame.body, Compat::Record) {
                    Ok(b) => break Closed::Refused(b),
                    Err(e) => break Closed::Protocol(e.to_string()),
                }
            }
            FrameKind::Reply | FrameKind::StreamItem | FrameKind::StreamEnd | FrameKind::Error => {}
            k => break Closed::Protocol(format!("unexpected {k:?} frame from the daemon")),
        }
        let terminal = matches!(
            h.kind,
            FrameKind::Reply | FrameKind::StreamEnd | FrameKind::Error
        );
        let tx = {
            let mut calls = inner.calls.lock().unwrap_or_else(|e| e.into_inner());
            if terminal {
                calls.remove(&h.call_id)
            } else {
                calls.get(&h.call_id).cloned()
            }
        };
        if let Some(tx) = tx {
            // Waits a little while the caller's queue is full (backpressure);
            // a stream nobody reads must not stall every other call of the
            // connection, so after STREAM_STALL it is dropped and cancelled.
            let item = Incoming::Frame {
                kind: h.kind,
                body: frame.body.to_vec(),
            };
            if tokio::time::timeout(STREAM_STALL, tx.send(item))
                .await
                .is_err()
            {
                inner.unregister(h.call_id);
                let inner = inner.clone();
                tokio::spawn(async move {
                    if let Ok((cid, _rx)) = inner.register() {
                        let cancel = vm_catalog_protocol::Cancel { call_id: h.call_id };
                        let _ = inner
                            .send(message::request(cid, &cancel, inner.welcome.max_frame))
                            .await;
                        inner.unregister(cid);
                    }
                });
            }
        }
    };
    let calls: Vec<_> = {
        let mut calls = inner.calls.lock().unwrap_or_else(|e| e.into_inner());
        *inner.closed.lock().unwrap_or_else(|e| e.into_inner()) = Some(closed.clone());
        calls.drain().collect()
    };
    for (_, tx) in calls {
        let _ = tx.try_send(Incoming::Closed(closed.clone()));
    }
}
