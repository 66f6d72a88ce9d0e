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
//! frames mean is decided in `session.rs`, for both clients; how they move
//! (datagrams or a byte stream) in `transport/`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::task::JoinHandle;
use vm_catalog_protocol::{Streaming, Unary, Welcome};

use crate::endpoint::{Endpoint, VsockAddr};
use crate::error::{Error, Result};
use crate::session::{ConnectOptions, Session};
use crate::transport;

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
    endpoint: Endpoint,
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
    /// Connects to the daemon's `SOCK_SEQPACKET` socket at `path`, with
    /// default options.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client> {
        Self::connect_with(path, &ConnectOptions::default()).await
    }

    /// Connects to the daemon's `SOCK_SEQPACKET` socket at `path`.
    pub async fn connect_with(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<Client> {
        Self::connect_to(&Endpoint::Seqpacket(path.as_ref().to_owned()), opts).await
    }

    /// Connects over a Unix `SOCK_STREAM` socket at `path` (frames back to
    /// back, as a UI VM's connection arrives on the host), with default
    /// options.
    pub async fn connect_stream(path: impl Into<PathBuf>) -> Result<Client> {
        Self::connect_to(&Endpoint::Stream(path.into()), &ConnectOptions::default()).await
    }

    /// Connects from inside a VM over `AF_VSOCK` to `port` of `cid` (2 is
    /// the host), with default options.
    pub async fn connect_vsock(cid: u32, port: u32) -> Result<Client> {
        Self::connect_to(
            &Endpoint::Vsock(VsockAddr { cid, port }),
            &ConnectOptions::default(),
        )
        .await
    }

    /// Connects to `endpoint` and completes the handshake, within
    /// `opts.timeout`.
    pub async fn connect_to(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<Client> {
        match tokio::time::timeout(opts.timeout, Self::handshake(endpoint, opts)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable {
                endpoint: endpoint.clone(),
                source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer to Hello"),
            }),
        }
    }

    async fn handshake(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<Client> {
        let (sender, mut receiver) =
            transport::conn::connect(endpoint)
                .await
                .map_err(|source| Error::Unreachable {
                    endpoint: endpoint.clone(),
                    source,
                })?;
        sender
            .send(Session::hello(opts)?)
            .await
            .map_err(|e| Error::Disconnected(Some(e)))?;
        let session = Session::accept(receiver.recv().await.map_err(|c| c.to_error())?)?;
        let inner = Arc::new(Inner::new(sender, session));
        let reader = tokio::spawn(router::read_loop(inner.clone(), receiver));
        Ok(Client {
            inner,
            reader,
            endpoint: endpoint.clone(),
        })
    }

    /// The daemon's `Welcome`: version, epoch, max frame, features.
    pub fn welcome(&self) -> &Welcome {
        self.inner.session.welcome()
    }

    /// Where this client connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
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
