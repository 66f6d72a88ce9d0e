//! The async client's two halves of a connection, whatever the transport:
//! a [`Sender`] that every call shares, and the [`Receiver`] the reader task
//! owns, which yields whole frames.

use std::io;
use std::sync::Arc;

use tokio::sync::Mutex;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::HANDSHAKE_MAX_FRAME;
use vm_catalog_protocol::stream::StreamFramer;

use super::StreamAddr;
use super::fd_stream::FdStream;
use crate::endpoint::Endpoint;
use crate::error::ProtocolError;
use crate::session::Closed;

/// Connects to `endpoint`; frames up to the handshake's size until
/// [`Receiver::set_max_frame`].
pub(crate) async fn connect(endpoint: &Endpoint) -> io::Result<(Sender, Receiver)> {
    let addr = match endpoint {
        Endpoint::Seqpacket(path) => {
            let socket = Arc::new(UnixSeqpacket::connect(path).await?);
            return Ok((
                Sender::Seqpacket(socket.clone()),
                Receiver::Seqpacket {
                    socket,
                    buf: vec![0; HANDSHAKE_MAX_FRAME as usize + 1],
                },
            ));
        }
        Endpoint::Stream(path) => StreamAddr::Unix(path),
        Endpoint::Vsock(addr) => StreamAddr::Vsock(*addr),
    };
    let socket = Arc::new(FdStream::connect(addr).await?);
    Ok((
        Sender::Stream {
            socket: socket.clone(),
            writing: Arc::new(Mutex::new(())),
        },
        Receiver::Stream {
            socket,
            framer: StreamFramer::new(HANDSHAKE_MAX_FRAME),
        },
    ))
}

/// Sends frames; shared by every call of a connection.
#[derive(Debug)]
pub(crate) enum Sender {
    /// One datagram per frame: each send is whole by itself.
    Seqpacket(Arc<UnixSeqpacket>),
    /// Frames back to back: one writer at a time, each frame whole.
    Stream {
        /// The socket.
        socket: Arc<FdStream>,
        /// Held while a frame is being written.
        writing: Arc<Mutex<()>>,
    },
}

impl Sender {
    /// Sends one frame.
    ///
    /// On a stream, a frame that the socket does not take at once is
    /// finished by a task of its own: if the caller gives up (its future
    /// is dropped), the frame is still written whole, for half a frame
    /// would turn the rest of the stream into garbage.
    pub(crate) async fn send(&self, frame: Vec<u8>) -> io::Result<()> {
        match self {
            Sender::Seqpacket(socket) => socket.send(&frame).await.map(|_| ()),
            Sender::Stream { socket, writing } => {
                let turn = writing.clone().lock_owned().await;
                // Nothing awaits between the lock and a write that takes
                // the whole frame: the common case needs no task.
                let written = socket
                    .try_write(&frame)
                    .inspect_err(|_| socket.shutdown())?;
                if written == frame.len() {
                    return Ok(());
                }
                let socket = socket.clone();
                let rest = tokio::spawn(async move {
                    let _turn = turn;
                    let r = socket.write_all(&frame[written..]).await;
                    if r.is_err() {
                        // A frame cut short: nothing more may follow it.
                        socket.shutdown();
                    }
                    r
                });
                rest.await.unwrap_or_else(|e| Err(io::Error::other(e)))
            }
        }
    }

    /// Ends the connection both ways.
    pub(crate) fn shutdown(&self) {
        match self {
            Sender::Seqpacket(socket) => {
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
            Sender::Stream { socket, .. } => socket.shutdown(),
        }
    }
}

/// Receives whole frames; owned by one reader.
#[derive(Debug)]
pub(crate) enum Receiver {
    /// One datagram per frame.
    Seqpacket {
        /// The socket.
        socket: Arc<UnixSeqpacket>,
        /// One byte longer than the largest frame, so that a larger one
        /// shows as truncated.
        buf: Vec<u8>,
    },
    /// Frames back to back.
    Stream {
        /// The socket.
        socket: Arc<FdStream>,
        /// Cuts the bytes into frames.
        framer: StreamFramer,
    },
}

impl Receiver {
    /// Accepts frames up to `max_frame` bytes from now on (the size the
    /// handshake negotiated).
    pub(crate) fn set_max_frame(&mut self, max_frame: u32) {
        match self {
            Receiver::Seqpacket { buf, .. } => *buf = vec![0; max_frame as usize + 1],
            Receiver::Stream { framer, .. } => framer.set_max_frame(max_frame),
        }
    }

    /// The next whole frame, or why the connection is over.
    pub(crate) async fn recv(&mut self) -> Result<&[u8], Closed> {
        match self {
            Receiver::Seqpacket { socket, buf } => {
                let info = socket
                    .recv(buf)
                    .await
                    .map_err(|e| Closed::Io(Arc::new(e)))?;
                match info.bytes_read() {
                    0 => Err(Closed::Eof),
                    _ if info.truncated() => Err(Closed::Protocol(ProtocolError::FrameTooLarge)),
                    n => Ok(&buf[..n]),
                }
            }
            Receiver::Stream { socket, framer } => {
                let bad = |e| Closed::Protocol(ProtocolError::BadStream(e));
                while !framer.has_frame().map_err(bad)? {
                    let n = socket
                        .read(framer.space())
                        .await
                        .map_err(|e| Closed::Io(Arc::new(e)))?;
                    if n == 0 {
                        // Clean between frames; inside one, the frame is lost.
                        return Err(framer.finish().map_or_else(bad, |()| Closed::Eof));
                    }
                    framer.filled(n);
                }
                // `has_frame` said there is one.
                framer.next_frame().map_err(bad)?.ok_or(Closed::Eof)
            }
        }
    }
}
