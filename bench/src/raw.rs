//! Blocking `SOCK_SEQPACKET` sockets with plain `send`/`recv` syscalls
//! (rustix), and just enough of the protocol to speak to the daemon in raw
//! frames: the handshake, requests with fresh call ids, and reading a call's
//! frames to its end.
//!
//! This is the physical floor the RPC suite compares against (the echo
//! server and its client use nothing else), and the tool the fan-out and
//! footprint suites use for subscribers that must not run a client library
//! (one that never reads, a thousand that only hold their connection).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    Call, DEFAULT_MAX_FRAME, Event, FrameKind, HANDSHAKE_MAX_FRAME, Hello, SUPPORTED_VERSIONS,
    Welcome, decode_frame, message,
};

/// One connected `SOCK_SEQPACKET` socket, blocking.
#[derive(Debug)]
pub(crate) struct Seqpacket {
    fd: OwnedFd,
}

fn seqpacket() -> io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

impl Seqpacket {
    /// Connects to the socket at `path`.
    pub(crate) fn connect(path: &Path) -> io::Result<Seqpacket> {
        let fd = seqpacket()?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(Seqpacket { fd })
    }

    /// Sends one datagram.
    pub(crate) fn send(&self, datagram: &[u8]) -> io::Result<()> {
        rustix::net::send(&self.fd, datagram, SendFlags::NOSIGNAL)?;
        Ok(())
    }

    /// Receives one datagram into `buf`; its length (0: end of file). A
    /// datagram longer than `buf` is an error.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (_, len) = rustix::net::recv(&self.fd, &mut *buf, RecvFlags::TRUNC)?;
        if len > buf.len() {
            return Err(io::Error::other(format!(
                "a datagram of {len} bytes does not fit in {}",
                buf.len()
            )));
        }
        Ok(len)
    }

    /// Bytes queued for this socket to read (`FIONREAD`, all datagrams).
    pub(crate) fn queued(&self) -> io::Result<u64> {
        Ok(rustix::io::ioctl_fionread(&self.fd)?)
    }
}

impl From<OwnedFd> for Seqpacket {
    /// A socket connected elsewhere (as another user, say).
    fn from(fd: OwnedFd) -> Seqpacket {
        Seqpacket { fd }
    }
}

impl AsFd for Seqpacket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A listening `SOCK_SEQPACKET` socket, blocking.
#[derive(Debug)]
pub(crate) struct Listener {
    fd: OwnedFd,
}

impl Listener {
    /// Binds and listens at `path` (which must not exist).
    pub(crate) fn bind(path: &Path) -> io::Result<Listener> {
        let fd = seqpacket()?;
        rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
        rustix::net::listen(&fd, 128)?;
        Ok(Listener { fd })
    }

    /// Accepts one connection.
    pub(crate) fn accept(&self) -> io::Result<Seqpacket> {
        let fd = rustix::net::accept_with(&self.fd, SocketFlags::CLOEXEC)?;
        Ok(Seqpacket { fd })
    }
}

/// A connection to the daemon in raw frames, after the handshake.
#[derive(Debug)]
pub(crate) struct RawClient {
    socket: Seqpacket,
    max_frame: u32,
    next_id: u32,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to the daemon at `path` and completes the handshake.
    pub(crate) fn connect(path: &Path) -> io::Result<RawClient> {
        Self::handshake(Seqpacket::connect(path)?, DEFAULT_MAX_FRAME)
    }

    /// Completes the handshake on a connected socket, asking for frames of
    /// `max_frame` bytes.
    pub(crate) fn handshake(socket: Seqpacket, max_frame: u32) -> io::Result<RawClient> {
        let hello = Hello {
            client: "vm-catalog-bench/raw".into(),
            versions: SUPPORTED_VERSIONS,
            max_frame,
            features: Default::default(),
        };
        socket.send(&message::hello(&hello).map_err(io::Error::other)?)?;
        let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize];
        let n = socket.recv(&mut buf)?;
        let frame = decode_frame(&buf[..n], HANDSHAKE_MAX_FRAME).map_err(io::Error::other)?;
        if frame.header.kind != FrameKind::Welcome {
            return Err(io::Error::other(format!(
                "expected Welcome, got {:?}",
                frame.header.kind
            )));
        }
        let welcome: Welcome =
            codec::decode(frame.body, Compat::Record).map_err(io::Error::other)?;
        Ok(RawClient {
            socket,
            max_frame: welcome.max_frame,
            next_id: 1,
            buf: vec![0u8; welcome.max_frame as usize],
        })
    }

    /// The socket.
    pub(crate) fn socket(&self) -> &Seqpacket {
        &self.socket
    }

    /// The request frame of call `params`, with a fresh call id.
    pub(crate) fn request<C: Call>(&mut self, params: &C) -> io::Result<Vec<u8>> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        message::request(id, params, self.max_frame).map_err(io::Error::other)
    }

    /// Gives `frame` (built by [`RawClient::request`]) a fresh call id, in place.
    pub(crate) fn renumber(&mut self, frame: &mut [u8]) {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        frame[8..12].copy_from_slice(&id.to_le_bytes());
    }

    /// Sends a frame.
    pub(crate) fn send(&self, frame: &[u8]) -> io::Result<()> {
        self.socket.send(frame)
    }

    /// Receives frames until the end of the call (`Reply`, `StreamEnd` or
    /// `Error`); calls `each(kind, len)` for every frame. An `Error` frame or
    /// anything unexpected is an error.
    pub(crate) fn finish_call(&mut self, mut each: impl FnMut(FrameKind, usize)) -> io::Result<()> {
        loop {
            let n = self.socket.recv(&mut self.buf)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let kind = frame_kind(&self.buf[..n])?;
            each(kind, n);
            match kind {
                FrameKind::Reply | FrameKind::StreamEnd => return Ok(()),
                FrameKind::StreamItem => {}
                k => return Err(io::Error::other(format!("unexpected {k:?} frame"))),
            }
        }
    }

    /// Receives one frame of a subscription and decodes its event.
    pub(crate) fn next_event(&mut self) -> io::Result<Event> {
        let n = self.socket.recv(&mut self.buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let frame = decode_frame(&self.buf[..n], self.max_frame).map_err(io::Error::other)?;
        if frame.header.kind != FrameKind::StreamItem {
            return Err(io::Error::other(format!(
                "expected a subscription item, got {:?}",
                frame.header.kind
            )));
        }
        codec::decode(frame.body, Compat::Exact).map_err(io::Error::other)
    }
}

/// The kind of a frame, read from its header only.
fn frame_kind(datagram: &[u8]) -> io::Result<FrameKind> {
    datagram
        .get(3)
        .and_then(|&b| FrameKind::from_u8(b))
        .ok_or_else(|| io::Error::other("not a frame"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_goes_through_a_listener_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let l = Listener::bind(&path).unwrap();
        let c = Seqpacket::connect(&path).unwrap();
        let s = l.accept().unwrap();
        c.send(b"hello").unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(s.recv(&mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        c.send(&[7u8; 40]).unwrap();
        assert!(
            s.recv(&mut buf).is_err(),
            "a truncated datagram is an error"
        );
        c.send(b"xy").unwrap();
        c.send(b"abc").unwrap();
        assert_eq!(s.queued().unwrap(), 5, "FIONREAD counts every datagram");
        drop(c);
        assert_eq!(s.recv(&mut buf).unwrap(), 2);
        assert_eq!(s.recv(&mut buf).unwrap(), 3);
        assert_eq!(s.recv(&mut buf).unwrap(), 0);
    }
}
