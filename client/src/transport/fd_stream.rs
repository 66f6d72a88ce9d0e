//! [`FdStream`]: a non-blocking stream socket (Unix or vsock) on the tokio
//! reactor, read and written through `&self`, so that the reader task and
//! the senders share it without splitting it.

use std::io;
use std::os::fd::OwnedFd;

use rustix::net::{RecvFlags, SendFlags, Shutdown};
use tokio::io::unix::AsyncFd;

use super::StreamAddr;

/// A connected non-blocking stream socket.
#[derive(Debug)]
pub(crate) struct FdStream {
    fd: AsyncFd<OwnedFd>,
}

impl FdStream {
    /// Connects a new non-blocking socket to `addr`.
    pub(super) async fn connect(addr: StreamAddr<'_>) -> io::Result<Self> {
        let fd = addr.socket(true)?;
        match addr.connect(&fd) {
            Ok(()) => Self::new(fd),
            Err(rustix::io::Errno::INPROGRESS) => {
                // vsock: the connection completes (or fails) in the
                // background; the socket turns writable when it has.
                let stream = Self::new(fd)?;
                let _ready = stream.fd.writable().await?;
                rustix::net::sockopt::socket_error(stream.fd.get_ref())??;
                Ok(stream)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn new(fd: OwnedFd) -> io::Result<Self> {
        // SAFETY: an `OwnedFd` is an open descriptor that stays open, and
        // the same, until the `AsyncFd` that owns it is dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(FdStream { fd })
    }

    /// Reads what is there (at least one byte, or 0 at end of file).
    pub(super) async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut ready = self.fd.readable().await?;
            match ready
                .try_io(|fd| Ok(rustix::net::recv(fd.get_ref(), &mut *buf, RecvFlags::empty())?.0))
            {
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes what the socket takes now, without waiting: the count (0 if
    /// it takes nothing).
    pub(super) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        loop {
            match rustix::net::send(self.fd.get_ref(), buf, SendFlags::NOSIGNAL) {
                Ok(n) => return Ok(n),
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Writes all of `buf`.
    pub(super) async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| Ok(rustix::net::send(fd.get_ref(), buf, SendFlags::NOSIGNAL)?))
            {
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Ends the connection both ways (the daemon sees it close, the reader
    /// sees end of file).
    pub(super) fn shutdown(&self) {
        let _ = rustix::net::shutdown(self.fd.get_ref(), Shutdown::Both);
    }
}
