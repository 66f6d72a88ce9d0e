//! The async client: one connection, many calls in flight.
//!
//! A background task reads every frame and routes it by call id to the call
//! that waits for it. Each call has a bounded queue: a caller that stops
//! reading a stream stops the reader task, the kernel buffers fill, and the
//! daemon notices (for a subscription: it drops the backlog and later sends a
//! fresh snapshot). Nothing grows without bound on either side.
//!
//! This module connects and makes calls; `router.rs` holds the shared
//! connection and its reader task, `stream.rs` the [`CallStream`]. What the
//! frames mean is decided in `session.rs`, for both clients.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::{HANDSHAKE_MAX_FRAME, Streaming, Unary, Welcome};

use crate::error::{Error, Result};
use crate::session::{ConnectOptions, Session};

mod router;
mod stream;

use router::{Incoming, Inner};
pub use stream::CallStream;

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
        self.inner.shut_down();
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
            .send(&Session::hello(opts)?)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize + 1];
        let info = socket
            .recv(&mut buf)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        if info.bytes_read() == 0 {
            return Err(Error::Disconnected(None));
        }
        let session = Session::accept(&buf[..info.bytes_read()])?;
        let inner = Arc::new(Inner::new(socket, session));
        let reader = tokio::spawn(router::read_loop(inner.clone()));
        Ok(Client {
            inner,
            reader,
            path: path.to_owned(),
        })
    }

    /// The daemon's `Welcome`: version, epoch, max frame, features.
    pub fn welcome(&self) -> &Welcome {
        self.inner.session.welcome()
    }

    /// The socket path this client connected to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes a unary call.
    pub async fn call<C: Unary>(&self, params: &C) -> Result<C::Reply> {
        let (id, mut rx) = self.inner.register()?;
        let _unregister = Unregister {
            inner: &self.inner,
            id,
        };
        self.inner
            .send(self.inner.session.request(id, params))
            .await?;
        match rx.recv().await {
            Some(Incoming::Frame { kind, body }) => self.inner.session.reply::<C>(kind, &body),
            Some(Incoming::Closed(c)) => Err(c.to_error()),
            None => Err(self.inner.ended()),
        }
    }

    /// Starts a streaming call.
    pub async fn stream<C: Streaming>(&self, params: &C) -> Result<CallStream<C>> {
        let (id, rx) = self.inner.register()?;
        let stream = CallStream::new(self.inner.clone(), id, rx);
        self.inner
            .send(self.inner.session.request(id, params))
            .await?;
        Ok(stream)
    }
}

/// Unregisters a unary call however it ends (also when its future is dropped).
struct Unregister<'a> {
    inner: &'a Inner,
    id: u32,
}

impl Drop for Unregister<'_> {
    fn drop(&mut self) {
        self.inner.unregister(self.id);
    }
}
