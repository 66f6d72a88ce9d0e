//! A UI VM's transport: a Unix `SOCK_STREAM` socket (its vsock connection,
//! spliced by its VMM), frames back to back, cut apart by the receiving
//! half's own [`StreamFramer`]. Both halves share the socket.
//!
//! A receive that is dropped loses nothing (the bytes read so far stay in
//! the framer). A send on a stream that is dropped half-way through its
//! frame (its call timed out, say) shuts the socket down: the rest of the
//! stream would be garbage to the peer.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::net::UnixStream;
use vm_catalog_protocol::stream::{StreamError, StreamFramer};

use super::{FrameRx, FrameTx, Incoming, Sending, Transport};

/// The sending half.
#[derive(Debug)]
pub(in crate::rpc) struct Tx(Arc<UnixStream>);

/// The receiving half: the socket and the framer of its bytes.
#[derive(Debug)]
pub(in crate::rpc) struct Rx {
    socket: Arc<UnixStream>,
    framer: StreamFramer,
}

impl Transport for UnixStream {
    type Tx = Tx;
    type Rx = Rx;
    const NAME: &'static str = "stream";

    fn split(self) -> (Tx, Rx) {
        let s = Arc::new(self);
        let framer = StreamFramer::new(vm_catalog_protocol::HANDSHAKE_MAX_FRAME);
        (Tx(s.clone()), Rx { socket: s, framer })
    }
}

impl FrameTx for Tx {
    fn send<'a>(&'a self, frame: &'a [u8]) -> Sending<'a> {
        Box::pin(async move {
            let mut guard = WholeFrame {
                tx: self,
                done: false,
            };
            let mut at = 0;
            while at < frame.len() {
                self.0.writable().await?;
                match self.0.try_write(&frame[at..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => at += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
            guard.done = true;
            Ok(())
        })
    }

    fn shutdown(&self) {
        // SAFETY: the descriptor is live for as long as the socket;
        // shutdown(2) only changes the connection's state.
        unsafe { libc::shutdown(self.0.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

/// Shuts a stream down when a frame's send ends before the frame is out.
struct WholeFrame<'a> {
    tx: &'a Tx,
    done: bool,
}

impl Drop for WholeFrame<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.tx.shutdown();
        }
    }
}

impl FrameRx for Rx {
    async fn recv(&mut self, max: u32) -> io::Result<Incoming> {
        let Rx { socket, framer } = self;
        framer.set_max_frame(max);
        loop {
            match framer.next_frame() {
                Ok(Some(frame)) => {
                    let frame = frame.to_vec();
                    // An idle connection (a subscriber) holds no buffer.
                    framer.release();
                    return Ok(Incoming::Frame(frame));
                }
                Ok(None) => {}
                Err(StreamError::TooLarge { len, .. }) => {
                    return Ok(Incoming::TooLarge(len.try_into().unwrap_or(usize::MAX)));
                }
                Err(e) => return Ok(Incoming::Garbage(e)),
            }
            socket.readable().await?;
            match socket.try_read(framer.space()) {
                Ok(0) => {
                    return Ok(match framer.finish() {
                        Ok(()) => Incoming::Eof,
                        Err(StreamError::Truncated { .. }) => Incoming::Cut,
                        Err(e) => Incoming::Garbage(e),
                    });
                }
                Ok(n) => framer.filled(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Rx {
    /// Bytes held for a partial frame.
    #[cfg(test)]
    fn buffered(&self) -> usize {
        self.framer.buffered()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use vm_catalog_protocol::{Ping, message};

    use super::*;

    fn pair() -> (Tx, Rx, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        let (tx, rx) = a.split();
        (tx, rx, b)
    }

    #[tokio::test]
    async fn a_stream_gives_whole_frames_from_any_pieces() {
        let (_tx, mut rx, mut peer) = pair();
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
        assert_eq!(rx.recv(65536).await.unwrap(), Incoming::Frame(one));
        assert_eq!(rx.recv(65536).await.unwrap(), Incoming::Frame(two));
        drop(writer.await.unwrap());
        assert_eq!(rx.recv(65536).await.unwrap(), Incoming::Eof);
        assert_eq!(rx.buffered(), 0);
    }

    #[tokio::test]
    async fn garbage_a_frame_too_large_and_a_cut_frame_are_told_apart() {
        let (_tx, mut rx, mut peer) = pair();
        peer.write_all(&[0x47; 16]).await.unwrap();
        assert!(matches!(
            rx.recv(4096).await.unwrap(),
            Incoming::Garbage(StreamError::BadMagic(_))
        ));

        let (_tx, mut rx, mut peer) = pair();
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
            rx.recv(4096).await.unwrap(),
            Incoming::TooLarge(big.len()),
            "refused on its header, before its body arrived"
        );

        let (_tx, mut rx, mut peer) = pair();
        peer.write_all(&big[..100]).await.unwrap();
        drop(peer);
        assert_eq!(rx.recv(65536).await.unwrap(), Incoming::Cut);
    }

    // On tokio's paused clock: the give-up is tokio's, so it is exact.
    #[tokio::test(start_paused = true)]
    async fn a_receive_given_up_loses_no_byte() {
        let (_tx, mut rx, mut peer) = pair();
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
            tokio::time::timeout(std::time::Duration::from_millis(50), rx.recv(65536)).await;
        assert!(early.is_err(), "a partial frame waits");
        assert_eq!(rx.buffered(), 20);
        peer.write_all(&frame[20..]).await.unwrap();
        assert_eq!(rx.recv(65536).await.unwrap(), Incoming::Frame(frame));
    }

    // On tokio's paused clock: the give-up is tokio's, so it is exact.
    #[tokio::test(start_paused = true)]
    async fn a_send_dropped_inside_its_frame_ends_the_stream() {
        let (t, _rx, b) = pair();
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
