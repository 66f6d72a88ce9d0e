//! A blocking client for programs without an async runtime (scripts, the
//! CLI, `vm-start`): one call at a time, on a blocking socket, with no
//! background task. Each call is a `send` and as many `recv`s as frames
//! come back.

use std::path::{Path, PathBuf};

use tokio::runtime::{Builder, Runtime};
use vm_catalog_protocol::{
    Call, Cursor, GetInfo, GetVm, Info, ListSources, ListVms, Ping, Rescan, SourceLabel,
    SourceList, Streaming, Unary, VmDetail, VmName, Welcome,
};

use crate::calls::{Collect, RescanReport, VmList};
use crate::endpoint::{Endpoint, VsockAddr};
use crate::error::{Error, Result};
use crate::session::{CallFrame, ConnectOptions, Inbound, Session, Step};
use crate::transport::blocking::{Socket, disconnected};
use crate::watch::{Mirror, Watch, WatchEvent};

/// A blocking connection to `vm-catalogd`.
///
/// ```no_run
/// let mut client = vm_catalog::BlockingClient::connect("/run/vm-catalog/socket")?;
/// for vm in client.list_vms(false, None)?.vms {
///     println!("{}", vm.name);
/// }
/// # Ok::<(), vm_catalog::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockingClient {
    socket: Socket,
    session: Session,
    next_id: u32,
    endpoint: Endpoint,
}

impl BlockingClient {
    /// Connects to the daemon's `SOCK_SEQPACKET` socket at `path`, with
    /// default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(path, &ConnectOptions::default())
    }

    /// Connects to the daemon's `SOCK_SEQPACKET` socket at `path`.
    pub fn connect_with(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<Self> {
        Self::connect_to(&Endpoint::Seqpacket(path.as_ref().to_owned()), opts)
    }

    /// See [`crate::Client::connect_stream`].
    pub fn connect_stream(path: impl Into<PathBuf>) -> Result<Self> {
        Self::connect_to(&Endpoint::Stream(path.into()), &ConnectOptions::default())
    }

    /// See [`crate::Client::connect_vsock`].
    pub fn connect_vsock(cid: u32, port: u32) -> Result<Self> {
        Self::connect_to(
            &Endpoint::Vsock(VsockAddr { cid, port }),
            &ConnectOptions::default(),
        )
    }

    /// Connects to `endpoint` and completes the handshake (within
    /// `opts.timeout`).
    pub fn connect_to(endpoint: &Endpoint, opts: &ConnectOptions) -> Result<Self> {
        let unreachable = |e: rustix::io::Errno| Error::Unreachable {
            endpoint: endpoint.clone(),
            source: e.into(),
        };
        // The handshake is bounded; calls afterwards are not (a rescan may
        // take minutes).
        let mut socket = Socket::connect(endpoint, opts.timeout).map_err(unreachable)?;
        socket.send(&Session::hello(opts)?)?;
        let session = Session::accept(socket.recv()?)?;
        socket.set_timeout(None).map_err(disconnected)?;
        socket.set_max_frame(session.max_frame());
        Ok(BlockingClient {
            socket,
            session,
            next_id: 1,
            endpoint: endpoint.clone(),
        })
    }

    /// The daemon's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        self.session.welcome()
    }

    /// Where this client connected to.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends the request of a new call; its id.
    fn request<C: Call>(&mut self, params: &C) -> Result<u32> {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        self.socket.send(&self.session.request(id, params)?)?;
        Ok(id)
    }

    /// Receives the next frame of call `id` and reads it with `read`.
    fn recv_for<T>(
        &mut self,
        id: u32,
        read: impl FnOnce(&Session, CallFrame, &[u8]) -> T,
    ) -> Result<T> {
        loop {
            let frame = self.socket.recv()?;
            match self.session.classify(frame) {
                Inbound::Call {
                    call_id,
                    kind,
                    body,
                } if call_id == id => return Ok(read(&self.session, kind, body)),
                // A late frame of an earlier call (none are in flight).
                Inbound::Call { .. } => continue,
                Inbound::Closed(c) => return Err(c.to_error()),
            }
        }
    }

    /// Makes a unary call.
    pub fn call<C: Unary>(&mut self, params: &C) -> Result<C::Reply> {
        let id = self.request(params)?;
        self.recv_for(id, |session, kind, body| session.reply::<C>(kind, body))?
    }

    /// Makes a streaming call: `on_item` gets every item; returns the end.
    pub fn stream<C: Streaming>(
        &mut self,
        params: &C,
        mut on_item: impl FnMut(C::Item),
    ) -> Result<C::End> {
        let id = self.request(params)?;
        loop {
            match self.recv_for(id, |session, kind, body| session.step::<C>(kind, body))? {
                Step::Item(item) => on_item(item?),
                Step::End(end) => return Ok(end),
                Step::Failed(e) => return Err(e),
            }
        }
    }

    /// Makes streaming call `C` and folds its items into its result.
    fn collect<C: Collect>(&mut self, params: &C) -> Result<C::Output> {
        let mut acc = C::Acc::default();
        let end = self.stream(params, |item| C::push(&mut acc, item))?;
        C::finish(acc, end)
    }

    /// See [`crate::Client::ping`].
    pub fn ping(&mut self, payload: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.call(&Ping { payload })?.payload)
    }

    /// See [`crate::Client::info`].
    pub fn info(&mut self) -> Result<Info> {
        self.call(&GetInfo {})
    }

    /// See [`crate::Client::list_vms`].
    pub fn list_vms(
        &mut self,
        include_inactive: bool,
        source: Option<SourceLabel>,
    ) -> Result<VmList> {
        self.collect(&ListVms {
            include_inactive,
            source,
        })
    }

    /// See [`crate::Client::get_vm`].
    pub fn get_vm(&mut self, name: &VmName) -> Result<VmDetail> {
        self.call(&GetVm { name: name.clone() })
    }

    /// See [`crate::Client::sources`].
    pub fn sources(&mut self) -> Result<SourceList> {
        self.call(&ListSources {})
    }

    /// See [`crate::Client::rescan`].
    pub fn rescan(&mut self, dry_run: bool) -> Result<RescanReport> {
        self.collect(&Rescan { dry_run })
    }
}

/// A blocking [`Watch`] (it runs the async watch on a private
/// current-thread runtime).
#[derive(Debug)]
pub struct BlockingWatch {
    watch: Watch,
    rt: Runtime,
}

impl BlockingWatch {
    /// A watch of the daemon at `endpoint` (a path: its `SOCK_SEQPACKET`
    /// socket), resuming from `since` if given.
    pub fn new(endpoint: impl Into<Endpoint>, since: Option<Cursor>) -> Result<Self> {
        let rt = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Disconnected(Some(e)))?;
        Ok(BlockingWatch {
            watch: Watch::since(endpoint, since),
            rt,
        })
    }

    /// See [`Watch::mirror`].
    pub fn mirror(&self) -> &Mirror {
        self.watch.mirror()
    }
}

/// Never ends: every item is the next [`WatchEvent`] (see [`Watch::next`]).
impl Iterator for BlockingWatch {
    type Item = Result<WatchEvent>;

    fn next(&mut self) -> Option<Result<WatchEvent>> {
        Some(self.rt.block_on(self.watch.next()))
    }
}
