//! The host's transport: `SOCK_SEQPACKET`, one frame per datagram. Both
//! halves share the socket.
//!
//! Datagrams are received without a buffer per connection.
//! An idle connection (a subscriber, say) would otherwise keep a receive
//! buffer of its whole max frame size for its lifetime. Instead, once the
//! socket is readable, the datagram is read into a per-thread scratch buffer
//! with `MSG_TRUNC` (which reports the datagram's real length even when it
//! is larger than the buffer) and copied out at its exact size.

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use tokio::io::Interest;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::LIMIT_MAX_FRAME;

use super::{FrameRx, FrameTx, Incoming, Sending, Transport};

/// The sending half.
#[derive(Debug)]
pub(in crate::rpc) struct Tx(Arc<UnixSeqpacket>);

/// The receiving half.
#[derive(Debug)]
pub(in crate::rpc) struct Rx(Arc<UnixSeqpacket>);

impl Transport for UnixSeqpacket {
    type Tx = Tx;
    type Rx = Rx;
    const NAME: &'static str = "seqpacket";

    fn split(self) -> (Tx, Rx) {
        let s = Arc::new(self);
        (Tx(s.clone()), Rx(s))
    }
}

impl FrameTx for Tx {
    fn send<'a>(&'a self, frame: &'a [u8]) -> Sending<'a> {
        Box::pin(async move { self.0.send(frame).await.map(|_| ()) })
    }

    /// Both datagrams in one `sendmmsg`: the peer, blocked for the first,
    /// finds the second there too when it wakes (one wake-up, one system
    /// call, where two sends cost two of each).
    fn send_two<'a>(&'a self, first: &'a [u8], second: &'a [u8]) -> Sending<'a> {
        Box::pin(async move {
            let frames = [first, second];
            let fd = self.0.as_async_fd();
            let mut sent = 0;
            while sent < frames.len() {
                let mut guard = fd.ready(Interest::WRITABLE).await?;
                match guard.try_io(|inner| send_many(inner.get_ref(), &frames[sent..])) {
                    Ok(n) => sent += n?,
                    // Not writable after all: wait again.
                    Err(_would_block) => continue,
                }
            }
            Ok(())
        })
    }

    fn shutdown(&self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
}

impl FrameRx for Rx {
    async fn recv(&mut self, max: u32) -> io::Result<Incoming> {
        recv(&self.0, max as usize).await
    }
}

/// Sends `frames` (at most two) as one datagram each with one `sendmmsg`,
/// without waiting; how many went out (at least one), or why none did.
fn send_many(fd: &impl std::os::fd::AsRawFd, frames: &[&[u8]]) -> io::Result<usize> {
    let n = frames.len().min(2);
    let iovec = |f: &[u8]| libc::iovec {
        iov_base: f.as_ptr().cast_mut().cast(),
        iov_len: f.len(),
    };
    let mut iov = [iovec(&[]), iovec(&[])];
    for (slot, f) in iov.iter_mut().zip(frames) {
        *slot = iovec(f);
    }
    // SAFETY: an all-zero `mmsghdr` is a valid empty message.
    let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
    for (m, iov) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` messages each point at one `iovec` of `iov`,
    // which points into a frame of `frames`; all live until the call
    // returns, and the kernel only reads them (and writes each message's
    // `msg_len`).
    let sent = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as libc::c_uint,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL | libc::MSG_EOR,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; LIMIT_MAX_FRAME as usize + 1]);
}

/// Receives one datagram of at most `max` bytes.
async fn recv(socket: &UnixSeqpacket, max: usize) -> io::Result<Incoming> {
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
                    0 => Incoming::Eof,
                    n if n > max => Incoming::TooLarge(n),
                    n => Incoming::Frame(scratch[..n].to_vec()),
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
            Incoming::Frame(b"hello".to_vec())
        );
        a.send(&[7u8; 101]).await.unwrap();
        assert_eq!(recv(&b, 100).await.unwrap(), Incoming::TooLarge(101));
        a.send(&[7u8; 100]).await.unwrap();
        assert_eq!(recv(&b, 100).await.unwrap(), Incoming::Frame(vec![7; 100]));
        drop(a);
        assert_eq!(recv(&b, 100).await.unwrap(), Incoming::Eof);
    }

    /// `send_two` sends both frames whole and in order, also when the
    /// socket is full (its send buffer spent by frames the peer has not
    /// read: `sendmmsg` sends one or none, the rest waits for the peer).
    #[tokio::test]
    async fn two_frames_go_out_whole_and_in_order_on_a_full_socket() {
        let (a, b) = UnixSeqpacket::pair().unwrap();
        let (tx, _rx) = a.split();
        let filler = |i: u32| {
            let mut f = vec![0u8; 1000];
            f[..4].copy_from_slice(&i.to_le_bytes());
            f
        };
        let mut queued = 0u32;
        while tokio::time::timeout(
            std::time::Duration::from_millis(50),
            tx.send(&filler(queued)),
        )
        .await
        .is_ok()
        {
            queued += 1;
        }
        // The send that timed out was dropped before it went out.
        let first = vec![1u8; 3000];
        let second = vec![2u8; 5000];
        let reader = async {
            let mut got = Vec::new();
            loop {
                match recv(&b, 10_000).await.unwrap() {
                    Incoming::Frame(f) => {
                        let done = f == second;
                        got.push(f);
                        if done {
                            return got;
                        }
                    }
                    other => panic!("{other:?}"),
                }
            }
        };
        let (sent, got) = tokio::join!(tx.send_two(&first, &second), reader);
        sent.unwrap();
        let fillers: Vec<Vec<u8>> = (0..queued).map(filler).collect();
        assert_eq!(got.len(), fillers.len() + 2);
        assert_eq!(got[..fillers.len()], fillers[..]);
        assert_eq!(got[fillers.len()..], [first, second]);
    }
}
