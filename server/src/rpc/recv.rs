//! Receiving `SOCK_SEQPACKET` datagrams without a buffer per connection
//! (the datagram side of [`super::transport::Receiver`]).
//!
//! An idle connection (a subscriber, say) would otherwise keep a receive
//! buffer of its whole max frame size for its lifetime. Instead, once the
//! socket is readable, the datagram is read into a per-thread scratch buffer
//! with `MSG_TRUNC` (which reports the datagram's real length even when it
//! is larger than the buffer) and copied out at its exact size.

use std::cell::RefCell;
use std::io;

use tokio::io::Interest;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::LIMIT_MAX_FRAME;

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Received {
    /// The peer closed the connection (or sent an empty datagram, which on
    /// `SOCK_SEQPACKET` cannot be told apart).
    Eof,
    /// A datagram of at most `max` bytes.
    Frame(Vec<u8>),
    /// A datagram larger than `max`: it was discarded.
    TooLarge(usize),
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; LIMIT_MAX_FRAME as usize + 1]);
}

/// Receives one datagram of at most `max` bytes.
pub async fn recv(socket: &UnixSeqpacket, max: usize) -> io::Result<Received> {
    let fd = socket.as_async_fd();
    loop {
        let mut guard = fd.ready(Interest::READABLE).await?;
        let got = guard.try_io(|inner| {
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let len = scratch.len().min(max + 1);
                // SAFETY: the buffer is valid for `len` bytes; recv writes at
                // most that many and returns the datagram's full length.
                let n = unsafe {
                    libc::recv(
                        std::os::fd::AsRawFd::as_raw_fd(inner.get_ref()),
                        scratch.as_mut_ptr().cast(),
                        len,
                        libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC,
                    )
                };
                if n < 0 {
                    return Err(io::Error::last_os_error());
                }
                let n = n as usize;
                Ok(match n {
                    0 => Received::Eof,
                    n if n > max => Received::TooLarge(n),
                    n => Received::Frame(scratch[..n].to_vec()),
                })
            })
        });
        match got {
            Ok(result) => return result,
            // Not readable after all: wait again.
            Err(_would_block) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sizes_eof_and_oversized_datagrams() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        a.send(b"hello").await.unwrap();
        assert_eq!(
            recv(&b, 100).await.unwrap(),
            Received::Frame(b"hello".to_vec())
        );
        a.send(&[7u8; 101]).await.unwrap();
        assert_eq!(recv(&b, 100).await.unwrap(), Received::TooLarge(101));
        a.send(&[7u8; 100]).await.unwrap();
        assert_eq!(recv(&b, 100).await.unwrap(), Received::Frame(vec![7; 100]));
        drop(a);
        assert_eq!(recv(&b, 100).await.unwrap(), Received::Eof);
    }
}
