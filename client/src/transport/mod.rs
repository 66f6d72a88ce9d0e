//! How frames move between a client and the daemon, under the one
//! [`Session`](crate::session) both clients share: whole datagrams on the
//! host's `SOCK_SEQPACKET` socket, or frames back to back on a byte stream
//! (a Unix `SOCK_STREAM` socket, or `AF_VSOCK` from inside a VM), cut back
//! into frames by the protocol crate's
//! [`StreamFramer`](vm_catalog_protocol::stream::StreamFramer).
//!
//! `conn.rs` holds the async halves the [`crate::Client`] uses (a sender
//! that writes each frame whole even when its caller gives up, and the
//! reader task's receiver), `fd_stream.rs` the async byte stream under them,
//! `blocking.rs` the [`crate::BlockingClient`]'s socket, `vsock.rs` the
//! `AF_VSOCK` address.

use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

use crate::endpoint::VsockAddr;

pub(crate) mod blocking;
pub(crate) mod conn;
pub(crate) mod fd_stream;
mod vsock;

/// The address of a stream endpoint.
#[derive(Debug, Clone, Copy)]
enum StreamAddr<'a> {
    Unix(&'a Path),
    Vsock(VsockAddr),
}

impl StreamAddr<'_> {
    /// A new stream socket (close-on-exec) of the address's family.
    fn socket(self, nonblocking: bool) -> rustix::io::Result<OwnedFd> {
        let family = match self {
            StreamAddr::Unix(_) => AddressFamily::UNIX,
            StreamAddr::Vsock(_) => AddressFamily::VSOCK,
        };
        let mut flags = SocketFlags::CLOEXEC;
        if nonblocking {
            flags |= SocketFlags::NONBLOCK;
        }
        rustix::net::socket_with(family, SocketType::STREAM, flags, None)
    }

    /// `connect(2)`; on a non-blocking vsock socket, `INPROGRESS` means the
    /// connection is under way.
    fn connect(self, fd: &OwnedFd) -> rustix::io::Result<()> {
        match self {
            StreamAddr::Unix(path) => rustix::net::connect(fd, &SocketAddrUnix::new(path)?),
            StreamAddr::Vsock(addr) => rustix::net::connect(fd, &vsock::SockAddr(addr)),
        }
    }
}
