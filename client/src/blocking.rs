//! A blocking client for programs without an async runtime (scripts, the
//! CLI, `vm-start`): one call at a time, on a blocking socket, with no
//! background task. Each call is a `send` and as many `recv`s as frames
//! come back.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketType, sockopt};
use serde::de::DeserializeOwned;
use tokio::runtime::{Builder, Runtime};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    Cursor, FrameKind, GetInfo, GetVm, Goodbye, HANDSHAKE_MAX_FRAME, Header, Info, ListSources,
    ListVms, PROTOCOL_VERSION, Ping, Rescan, SourceLabel, SourceList, Streaming, Unary, VmDetail,
    VmName, Welcome, decode_frame, message,
};

use crate::calls::{RescanReport, VmList, check_list};
use crate::client::{ConnectOptions, hello_frame, read_welcome};
use crate::error::{Error, Result};
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
    fd: OwnedFd,
    welcome: Welcome,
    compat: Compat,
    next_id: u32,
    buf: Vec<u8>,
    path: PathBuf,
}

fn io_err(e: rustix::io::Errno) -> std::io::Error {
    e.into()
}

impl BlockingClient {
    /// Connects with default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(path, &ConnectOptions::default())
    }

    /// Connects and completes the handshake (within `opts.timeout`).
    pub fn connect_with(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<Self> {
        let path = path.as_ref().to_owned();
        let unreachable = |source: std::io::Error| Error::Unreachable {
            path: path.clone(),
            source,
        };
        let fd = rustix::net::socket(AddressFamily::UNIX, SocketType::SEQPACKET, None)
            .map_err(|e| unreachable(io_err(e)))?;
        let addr = SocketAddrUnix::new(&path).map_err(|e| unreachable(io_err(e)))?;
        rustix::net::connect(&fd, &addr).map_err(|e| unreachable(io_err(e)))?;
        // The handshake is bounded; calls afterwards are not (a rescan may
        // take minutes).
        let limit = Some(opts.timeout);
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Recv, limit)
            .map_err(|e| unreachable(io_err(e)))?;
        sockopt::set_socket_timeout(&fd, sockopt::Timeout::Send, limit)
            .map_err(|e| unreachable(io_err(e)))?;
        let mut c = BlockingClient {
            fd,
            welcome: Welcome {
                version: 0,
                server: String::new(),
                epoch: Default::default(),
                max_frame: HANDSHAKE_MAX_FRAME,
                features: Default::default(),
                supported: vm_catalog_protocol::SUPPORTED_VERSIONS,
            },
            compat: Compat::Exact,
            next_id: 1,
            buf: vec![0; HANDSHAKE_MAX_FRAME as usize + 1],
            path: path.clone(),
        };
        c.send(&hello_frame(opts)?)?;
        let n = c.recv_raw()?;
        let welcome = read_welcome(&c.buf[..n])?;
        sockopt::set_socket_timeout(&c.fd, sockopt::Timeout::Recv, None)
            .map_err(|e| Error::Disconnected(Some(io_err(e))))?;
        sockopt::set_socket_timeout(&c.fd, sockopt::Timeout::Send, None)
            .map_err(|e| Error::Disconnected(Some(io_err(e))))?;
        c.compat = Compat::between(PROTOCOL_VERSION, welcome.supported.max);
        c.buf = vec![0; welcome.max_frame as usize + 1];
        c.welcome = welcome;
        Ok(c)
    }

    /// The daemon's `Welcome`.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, frame: &[u8]) -> Result<()> {
        rustix::net::send(&self.fd, frame, SendFlags::NOSIGNAL)
            .map(|_| ())
            .map_err(|e| Error::Disconnected(Some(io_err(e))))
    }

    /// Receives one datagram into `buf`; its length.
    fn recv_raw(&mut self) -> Result<usize> {
        let (_, len) = rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::TRUNC)
            .map_err(|e| Error::Disconnected(Some(io_err(e))))?;
        if len == 0 {
            return Err(Error::Disconnected(None));
        }
        if len >= self.buf.len() {
            return Err(Error::Protocol(
                "the daemon sent a frame larger than negotiated".into(),
            ));
        }
        Ok(len)
    }

    /// Receives the next frame of call `id`: its header and body.
    fn recv_for(&mut self, id: u32) -> Result<(Header, Vec<u8>)> {
        loop {
            let n = self.recv_raw()?;
            let frame = decode_frame(&self.buf[..n], self.welcome.max_frame)
                .map_err(|e| Error::Protocol(e.to_string()))?;
            let h = frame.header;
            match h.kind {
                FrameKind::Goodbye => {
                    let reason = codec::decode::<Goodbye>(frame.body, Compat::Record)
                        .map(|g| g.reason)
                        .unwrap_or_else(|_| "goodbye".into());
                    return Err(Error::Goodbye(reason));
                }
                FrameKind::Error if h.call_id == 0 || h.call_id == id => {
                    return Err(Error::Daemon(self.decode(frame.body)?));
                }
                _ if h.call_id == id => return Ok((h, frame.body.to_vec())),
                // A late frame of an earlier call (none are in flight).
                _ => continue,
            }
        }
    }

    fn decode<T: DeserializeOwned>(&self, body: &[u8]) -> Result<T> {
        codec::decode(body, self.compat).map_err(|e| Error::Protocol(e.to_string()))
    }

    fn next_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.checked_add(1).unwrap_or(1);
        id
    }

    /// Makes a unary call.
    pub fn call<C: Unary>(&mut self, params: &C) -> Result<C::Reply> {
        let id = self.next_id();
        self.send(&message::request(id, params, self.welcome.max_frame).map_err(Error::Frame)?)?;
        let (h, body) = self.recv_for(id)?;
        match h.kind {
            FrameKind::Reply => self.decode(&body),
            k => Err(Error::Protocol(format!(
                "unexpected {k:?} for a unary call"
            ))),
        }
    }

    /// Makes a streaming call: `on_item` gets every item; returns the end.
    pub fn stream<C: Streaming>(
        &mut self,
        params: &C,
        mut on_item: impl FnMut(C::Item),
    ) -> Result<C::End> {
        let id = self.next_id();
        self.send(&message::request(id, params, self.welcome.max_frame).map_err(Error::Frame)?)?;
        loop {
            let (h, body) = self.recv_for(id)?;
            match h.kind {
                FrameKind::StreamItem => on_item(self.decode(&body)?),
                FrameKind::StreamEnd => return self.decode(&body),
                k => return Err(Error::Protocol(format!("unexpected {k:?} in a stream"))),
            }
        }
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
        let mut vms = Vec::new();
        let end = self.stream(
            &ListVms {
                include_inactive,
                source,
            },
            |page| vms.extend(page.vms),
        )?;
        check_list(&end, vms.len())?;
        Ok(VmList {
            cursor: end.cursor,
            vms,
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
        let mut changes = Vec::new();
        let outcome = self.stream(&Rescan { dry_run }, |page| changes.extend(page.changes))?;
        Ok(RescanReport { changes, outcome })
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
    /// A watch of the daemon at `path`, resuming from `since` if given.
    pub fn new(path: impl Into<PathBuf>, since: Option<Cursor>) -> Result<Self> {
        let rt = Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Disconnected(Some(e)))?;
        Ok(BlockingWatch {
            watch: Watch::since(path, since),
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
