//! The seam between a connection and its socket: a transport sends whole
//! frames ([`FrameTx`]) and receives whole frames ([`FrameRx`]), each
//! exactly the bytes of one frame, and is split into the two once a
//! connection is accepted ([`Transport::split`]), as zlink's
//! `Socket`/`ReadHalf`/`WriteHalf`. Everything above — the handshake, the
//! read loop, the calls, the sends, the accept loop ([`super::accept`]) —
//! is one implementation for every transport.
//!
//! Two transports exist:
//! - [`seqpacket`]: the host's `SOCK_SEQPACKET` socket, one frame per
//!   datagram;
//! - [`stream`]: a Unix `SOCK_STREAM` socket (a UI VM's vsock connection,
//!   spliced by its VMM), frames back to back, cut apart by its own
//!   [`StreamFramer`](vm_catalog_protocol::stream::StreamFramer).
//!
//! What only a stream can do wrong (garbage where a header should be, end
//! of file inside a frame) comes up as an [`Incoming`] of its own, so the
//! read loop answers it as `docs/protocol.md` §1 says.
//!
//! **Adding a transport**: a module here with a type that implements
//! [`Transport`] (its halves implementing [`FrameTx`] and [`FrameRx`]:
//! whole frames out, whole frames in, cancel-safe receives), and a
//! listener implementing [`super::accept::Listen`] whose connections are
//! that type; then [`super::accept::run`] serves it with an
//! [`super::accept::Admit`] policy saying who its peers are and what they
//! draw on.

use std::fmt::Debug;
use std::future::Future;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;

use vm_catalog_protocol::stream::StreamError;

pub(super) mod seqpacket;
pub(super) mod stream;

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
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

/// A boxed send (the sending half is shared as a trait object by every
/// call of a connection).
pub(super) type Sending<'a> = Pin<Box<dyn Future<Output = io::Result<()>> + Send + 'a>>;

/// The sending half of a connection, shared by its read loop and its call
/// tasks.
pub(super) trait FrameTx: Debug + Send + Sync + 'static {
    /// Sends one whole frame. A send dropped before its frame is out must
    /// leave the peer nothing half-sent it could misread (a stream shuts
    /// itself down).
    fn send<'a>(&'a self, frame: &'a [u8]) -> Sending<'a>;

    /// Sends two whole frames, `first` then `second`, as one send where the
    /// transport can (the peer is woken once for both). The same promise as
    /// [`FrameTx::send`] holds for each.
    fn send_two<'a>(&'a self, first: &'a [u8], second: &'a [u8]) -> Sending<'a> {
        Box::pin(async move {
            self.send(first).await?;
            self.send(second).await
        })
    }

    /// Shuts the connection down both ways: the peer sees the end, and
    /// every pending receive and send on it returns.
    fn shutdown(&self);
}

/// The receiving half of a connection, owned by the one task that reads.
pub(super) trait FrameRx: Send + Sync + 'static {
    /// Receives one frame of at most `max` bytes. Cancel-safe: a receive
    /// that is dropped loses nothing.
    fn recv(&mut self, max: u32) -> impl Future<Output = io::Result<Incoming>> + Send;
}

/// An accepted connection's socket, before it is split.
pub(super) trait Transport: AsFd + Send + 'static {
    /// Its sending half.
    type Tx: FrameTx;
    /// Its receiving half.
    type Rx: FrameRx;
    /// Its name, for logs.
    const NAME: &'static str;

    /// Its two halves.
    fn split(self) -> (Self::Tx, Self::Rx);
}
