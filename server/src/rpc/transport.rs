//! The two transports a connection can run on, behind one seam: the host's
//! `SOCK_SEQPACKET` socket (one frame per datagram) and a Unix
//! `SOCK_STREAM` socket (a UI VM's vsock connection, spliced by its VMM:
//! frames back to back, cut apart by the protocol crate's
//! [`StreamFramer`]).
//!
//! Everything above this module — the handshake, the read loop, the calls,
//! the sends — is one implementation for both: it sends whole frames
//! ([`Transport::send`]) and receives whole frames ([`Receiver::recv`]),
//! each exactly the bytes of one datagram, and checks them with
//! `decode_frame` as before. What only a stream can do wrong (garbage where
//! a header should be, end of file inside a frame) comes up as a
//! [`Datagram`] of its own, so the read loop answers it as
//! `docs/protocol.md` §1 says.
//!
//! Both are cancel-safe where the read loop needs it: a receive that is
//! dropped loses nothing (the bytes read so far stay in the receiver's
//! framer). A send on a stream that is dropped half-way through its frame
//! (its call timed out, say) shuts the socket down: the rest of the stream
//! would be garbage to the peer.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use tokio::net::UnixStream;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::stream::{StreamError, StreamFramer};

use super::recv;

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram {
    /// The peer closed the connection between frames (or, on
    /// `SOCK_SEQPACKET`, sent an empty datagram, which cannot be told apart).
    Eof,
    /// One frame's bytes, of at most the maximum asked for (not yet
    /// checked beyond what finding its end needed).
    Frame(Vec<u8>),
    /// A frame larger than the maximum: it was discarded (a datagram) or
    /// not read (on a stream, where only its header arrived).
    TooLarge(usize),
    /// A stream whose next header is not one (another magic or header
    /// version): the stream cannot be resynchronised.
    Garbage(StreamError),
    /// A stream that ended inside a frame: the peer is gone.
    Cut,
}

/// A connection's socket.
#[derive(Debug)]
pub enum Transport {
    /// A host client on the `SOCK_SEQPACKET` socket.
    Seqpacket(UnixSeqpacket),
    /// A byte stream (a UI VM, through its VMM's hybrid vsock).
    Stream(UnixStream),
}

impl Transport {
    /// The name of the transport, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Seqpacket(_) => "seqpacket",
            Transport::Stream(_) => "stream",
        }
    }

    /// The socket's descriptor.
    pub fn raw_fd(&self) -> RawFd {
        match self {
            Transport::Seqpacket(s) => s.as_raw_fd(),
            Transport::Stream(s) => s.as_raw_fd(),
        }
    }

    /// Sends one whole frame. On a stream, a send dropped before the frame
    /// is out shuts the socket down (see the module docs).
    pub async fn send(&self, frame: &[u8]) -> io::Result<()> {
        match self {
            Transport::Seqpacket(s) => s.send(frame).await.map(|_| ()),
            Transport::Stream(s) => {
                let mut guard = WholeFrame {
                    transport: self,
                    done: false,
                };
                let mut at = 0;
                while at < frame.len() {
                    s.writable().await?;
                    match s.try_write(&frame[at..]) {
                        Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                        Ok(n) => at += n,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                        Err(e) => return Err(e),
                    }
                }
                guard.done = true;
                Ok(())
            }
        }
    }

    /// Shuts the connection down both ways: the peer sees the end, and every
    /// pending receive and send on it returns.
    pub fn shutdown(&self) {
        match self {
            Transport::Seqpacket(s) => {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            Transport::Stream(s) => {
                // SAFETY: the descriptor is live for as long as `s`;
                // shutdown(2) only changes the connection's state.
                unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
    }
}

/// Shuts a stream down when a frame's send ends before the frame is out.
struct WholeFrame<'a> {
    transport: &'a Transport,
    done: bool,
}

impl Drop for WholeFrame<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.transport.shutdown();
        }
    }
}

/// The receiving side of a connection: nothing of its own on
/// `SOCK_SEQPACKET` (datagrams are read through a per-thread buffer), the
/// framer of a stream. Owned by the one task that reads.
#[derive(Debug)]
pub struct Receiver {
    framer: Option<StreamFramer>,
}

impl Receiver {
    /// A receiver for `transport`, before the handshake.
    pub fn new(transport: &Transport) -> Receiver {
        Receiver {
            framer: match transport {
                Transport::Seqpacket(_) => None,
                Transport::Stream(_) => {
                    Some(StreamFramer::new(vm_catalog_protocol::HANDSHAKE_MAX_FRAME))
                }
            },
        }
    }

    /// Receives one frame of at most `max` bytes from `transport` (the one
    /// this receiver was made for). Cancel-safe.
    pub async fn recv(&mut self, transport: &Transport, max: u32) -> io::Result<Datagram> {
        match (transport, &mut self.framer) {
            (Transport::Seqpacket(s), _) => Ok(match recv::recv(s, max as usize).await? {
                recv::Received::Eof => Datagram::Eof,
                recv::Received::Frame(f) => Datagram::Frame(f),
                recv::Received::TooLarge(n) => Datagram::TooLarge(n),
            }),
            (Transport::Stream(s), Some(framer)) => recv_stream(s, framer, max).await,
            (Transport::Stream(_), None) => Err(io::Error::other("receiver of another transport")),
        }
    }

    /// Bytes held for a partial frame (0 on `SOCK_SEQPACKET`).
    pub fn buffered(&self) -> usize {
        self.framer.as_ref().map_or(0, StreamFramer::buffered)
    }
}

async fn recv_stream(s: &UnixStream, framer: &mut StreamFramer, max: u32) -> io::Result<Datagram> {
    framer.set_max_frame(max);
    loop {
        match framer.next_frame() {
            Ok(Some(frame)) => {
                let frame = frame.to_vec();
                // An idle connection (a subscriber) holds no buffer.
                framer.release();
                return Ok(Datagram::Frame(frame));
            }
            Ok(None) => {}
            Err(StreamError::TooLarge { len, .. }) => {
                return Ok(Datagram::TooLarge(len.try_into().unwrap_or(usize::MAX)));
            }
            Err(e) => return Ok(Datagram::Garbage(e)),
        }
        s.readable().await?;
        match s.try_read(framer.space()) {
            Ok(0) => {
                return Ok(match framer.finish() {
                    Ok(()) => Datagram::Eof,
                    Err(StreamError::Truncated { .. }) => Datagram::Cut,
                    Err(e) => Datagram::Garbage(e),
                });
            }
            Ok(n) => framer.filled(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use vm_catalog_protocol::{Ping, message};

    use super::*;

    fn pair() -> (Transport, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (Transport::Stream(a), b)
    }

    #[tokio::test]
    async fn a_stream_gives_whole_frames_from_any_pieces() {
        let (t, mut peer) = pair();
        let mut rx = Receiver::new(&t);
        let one = message::request(
            1,
            &Ping {
                payload: vec![1; 300],
            },
            65536,
        )
        .unwrap();
        let two = message::request(2, &Ping { payload: vec![2] }, 65536).unwrap();
        let mut bytes = one.clone();
        bytes.extend_from_slice(&two);
        let writer = tokio::spawn(async move {
            for b in bytes.chunks(7) {
                peer.write_all(b).await.unwrap();
                tokio::task::yield_now().await;
            }
            peer
        });
        assert_eq!(rx.recv(&t, 65536).await.unwrap(), Datagram::Frame(one));
        assert_eq!(rx.recv(&t, 65536).await.unwrap(), Datagram::Frame(two));
        drop(writer.await.unwrap());
        assert_eq!(rx.recv(&t, 65536).await.unwrap(), Datagram::Eof);
        assert_eq!(rx.buffered(), 0);
    }

    #[tokio::test]
    async fn garbage_a_frame_too_large_and_a_cut_frame_are_told_apart() {
        let (t, mut peer) = pair();
        let mut rx = Receiver::new(&t);
        peer.write_all(&[0x47; 16]).await.unwrap();
        assert!(matches!(
            rx.recv(&t, 4096).await.unwrap(),
            Datagram::Garbage(StreamError::BadMagic(_))
        ));

        let (t, mut peer) = pair();
        let mut rx = Receiver::new(&t);
        let big = message::request(
            1,
            &Ping {
                payload: vec![0; 5000],
            },
            65536,
        )
        .unwrap();
        peer.write_all(&big[..16]).await.unwrap();
        assert_eq!(
            rx.recv(&t, 4096).await.unwrap(),
            Datagram::TooLarge(big.len()),
            "refused on its header, before its body arrived"
        );

        let (t, mut peer) = pair();
        let mut rx = Receiver::new(&t);
        peer.write_all(&big[..100]).await.unwrap();
        drop(peer);
        assert_eq!(rx.recv(&t, 65536).await.unwrap(), Datagram::Cut);
    }

    #[tokio::test]
    async fn a_receive_given_up_loses_no_byte() {
        let (t, mut peer) = pair();
        let mut rx = Receiver::new(&t);
        let frame = message::request(
            3,
            &Ping {
                payload: vec![3; 40],
            },
            65536,
        )
        .unwrap();
        peer.write_all(&frame[..20]).await.unwrap();
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv(&t, 65536)).await;
        assert!(early.is_err(), "a partial frame waits");
        assert_eq!(rx.buffered(), 20);
        peer.write_all(&frame[20..]).await.unwrap();
        assert_eq!(rx.recv(&t, 65536).await.unwrap(), Datagram::Frame(frame));
    }

    #[tokio::test]
    async fn a_send_dropped_inside_its_frame_ends_the_stream() {
        let (a, b) = UnixStream::pair().unwrap();
        let t = Transport::Stream(a);
        // Larger than the socket buffers: the send cannot finish unread.
        let frame = vec![0u8; 8 << 20];
        let sent =
            tokio::time::timeout(std::time::Duration::from_millis(100), t.send(&frame)).await;
        assert!(sent.is_err());
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        loop {
            b.readable().await.unwrap();
            match b.try_read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert!(total < frame.len(), "the peer sees an end, not the rest");
    }
}
