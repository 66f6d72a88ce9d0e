//! The [`crate::BlockingClient`]'s socket: blocking, one frame at a time,
//! as datagrams or as frames back to back on a stream.

use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::net::{
    AddressFamily, RecvFlags, SendFlags, Shutdown, SocketAddrUnix, SocketFlags, SocketType, sockopt,
};
use vm_catalog_protocol::HANDSHAKE_MAX_FRAME;
use vm_catalog_protocol::stream::StreamFramer;

use super::StreamAddr;
use crate::endpoint::Endpoint;
use crate::error::{Error, ProtocolError, Result};

/// A blocking connection: sends and receives whole frames.
#[derive(Debug)]
pub(crate) struct Socket {
    fd: OwnedFd,
    frames: Frames,
    /// The bound on every send and receive, also on the wait for input on a
    /// stream.
    timeout: Option<Duration>,
}

#[derive(Debug)]
enum Frames {
    /// `SOCK_SEQPACKET`: one datagram per frame, received into a buffer one
    /// byte longer than the largest frame, so that a larger one shows as
    /// truncated.
    Datagrams(Vec<u8>),
    /// A stream, cut into frames.
    Stream(StreamFramer),
}

impl Socket {
    /// Connects to `endpoint`, with sends, receives (and on Unix sockets the
    /// connect itself) bounded by `timeout`; frames up to the handshake's
    /// size until [`Socket::set_max_frame`]. A vsock connect is bounded by
    /// the kernel's vsock connect timeout (2 s by default).
    pub(crate) fn connect(endpoint: &Endpoint, timeout: Duration) -> rustix::io::Result<Self> {
        let (fd, frames) = match endpoint {
            Endpoint::Seqpacket(path) => {
                let fd = rustix::net::socket_with(
                    AddressFamily::UNIX,
                    SocketType::SEQPACKET,
                    SocketFlags::CLOEXEC,
                    None,
                )?;
                set_timeout(&fd, Some(timeout))?;
                rustix::net::connect(&fd, &SocketAddrUnix::new(path.as_path())?)?;
                (
                    fd,
                    Frames::Datagrams(vec![0; HANDSHAKE_MAX_FRAME as usize + 1]),
                )
            }
            Endpoint::Stream(path) => stream(StreamAddr::Unix(path), timeout)?,
            Endpoint::Vsock(addr) => stream(StreamAddr::Vsock(*addr), timeout)?,
        };
        Ok(Socket {
            fd,
            frames,
            timeout: Some(timeout),
        })
    }

    /// Bounds every send and receive (`None`: no bound).
    pub(crate) fn set_timeout(&mut self, limit: Option<Duration>) -> rustix::io::Result<()> {
        set_timeout(&self.fd, limit)?;
        self.timeout = limit;
        Ok(())
    }

    /// Receives frames up to `max_frame` bytes from now on.
    pub(crate) fn set_max_frame(&mut self, max_frame: u32) {
        match &mut self.frames {
            Frames::Datagrams(buf) => *buf = vec![0; max_frame as usize + 1],
            Frames::Stream(framer) => framer.set_max_frame(max_frame),
        }
    }

    /// Sends one frame, whole. On a stream, a send that fails part way
    /// ends the connection: nothing may follow half a frame.
    pub(crate) fn send(&self, frame: &[u8]) -> Result<()> {
        let mut rest = frame;
        while !rest.is_empty() {
            match rustix::net::send(&self.fd, rest, SendFlags::NOSIGNAL) {
                Ok(n) => rest = &rest[n..],
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    if rest.len() < frame.len() {
                        let _ = rustix::net::shutdown(&self.fd, Shutdown::Both);
                    }
                    return Err(disconnected(e));
                }
            }
        }
        Ok(())
    }

    /// Receives one frame.
    pub(crate) fn recv(&mut self) -> Result<&[u8]> {
        match &mut self.frames {
            Frames::Datagrams(buf) => {
                let (_, len) =
                    retry(|| rustix::net::recv(&self.fd, &mut buf[..], RecvFlags::TRUNC))
                        .map_err(disconnected)?;
                if len == 0 {
                    return Err(Error::Disconnected(None));
                }
                if len >= buf.len() {
                    return Err(Error::Protocol(ProtocolError::FrameTooLarge));
                }
                Ok(&buf[..len])
            }
            Frames::Stream(framer) => {
                let bad = |e| Error::Protocol(ProtocolError::BadStream(e));
                while !framer.has_frame().map_err(bad)? {
                    wait_for_input(&self.fd, self.timeout).map_err(disconnected)?;
                    let space = framer.space();
                    let (n, _) =
                        retry(|| rustix::net::recv(&self.fd, &mut *space, RecvFlags::empty()))
                            .map_err(disconnected)?;
                    if n == 0 {
                        framer.finish().map_err(bad)?;
                        return Err(Error::Disconnected(None));
                    }
                    framer.filled(n);
                }
                // `has_frame` said there is one.
                framer
                    .next_frame()
                    .map_err(bad)?
                    .ok_or(Error::Disconnected(None))
            }
        }
    }
}

/// A blocking stream socket connected to `addr`.
fn stream(addr: StreamAddr<'_>, timeout: Duration) -> rustix::io::Result<(OwnedFd, Frames)> {
    let fd = addr.socket(false)?;
    set_timeout(&fd, Some(timeout))?;
    addr.connect(&fd)?;
    Ok((fd, Frames::Stream(StreamFramer::new(HANDSHAKE_MAX_FRAME))))
}

/// Waits until `fd` has input (or its peer hung up), at most `limit`; a
/// timeout is `EAGAIN`, as a receive timeout is.
///
/// On a Unix stream, a reader blocked in `recv` sleeps on the queue that
/// also tells writers of free space, so it is woken, for nothing, each time
/// the daemon reads a request it sent (the kernel's `unix_write_space`):
/// one more wake-up per call. A `poll` for input only is not woken by that.
fn wait_for_input(fd: &OwnedFd, limit: Option<Duration>) -> rustix::io::Result<()> {
    // A zero bound is none, as for `SO_RCVTIMEO`.
    let timeout = limit
        .filter(|l| !l.is_zero())
        .and_then(|l| Timespec::try_from(l).ok());
    let mut fds = [PollFd::new(fd, PollFlags::IN)];
    match retry(|| poll(&mut fds, timeout.as_ref()))? {
        0 => Err(rustix::io::Errno::AGAIN),
        _ => Ok(()),
    }
}

fn set_timeout(fd: &OwnedFd, limit: Option<Duration>) -> rustix::io::Result<()> {
    sockopt::set_socket_timeout(fd, sockopt::Timeout::Recv, limit)?;
    sockopt::set_socket_timeout(fd, sockopt::Timeout::Send, limit)
}

/// Runs a system call again when a signal interrupted it.
fn retry<T>(mut call: impl FnMut() -> rustix::io::Result<T>) -> rustix::io::Result<T> {
    loop {
        match call() {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r,
        }
    }
}

pub(crate) fn disconnected(e: rustix::io::Errno) -> Error {
    Error::Disconnected(Some(e.into()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::net::UnixListener;
    use std::time::Instant;

    use super::*;

    /// The wait for input on a stream (a `poll`) keeps the receive timeout:
    /// a peer that never answers ends the receive, it does not hang it.
    #[test]
    fn a_stream_receive_waits_no_longer_than_its_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let mut socket =
            Socket::connect(&Endpoint::Stream(path), Duration::from_millis(200)).unwrap();
        let (mut peer, _) = listener.accept().unwrap();
        // Half a header: the receive must wait for the rest, then give up.
        peer.write_all(&[0x56, 0x43, 1]).unwrap();
        let started = Instant::now();
        let e = socket.recv().unwrap_err();
        assert!(matches!(e, Error::Disconnected(Some(_))), "{e:?}");
        assert!(started.elapsed() >= Duration::from_millis(150));
    }
}
