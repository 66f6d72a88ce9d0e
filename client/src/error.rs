//! Client errors: transport failures, version mismatch, the daemon's
//! refusals, and what the daemon sent that this client cannot read
//! ([`ProtocolError`]).

use vm_catalog_protocol::codec::DecodeError;
use vm_catalog_protocol::stream::StreamError;
use vm_catalog_protocol::{ErrorBody, ErrorCode, FrameError, FrameKind, VersionRange};

use crate::endpoint::Endpoint;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon could not be reached.
    #[error("cannot reach vm-catalogd at {endpoint}")]
    Unreachable {
        /// Where it was looked for.
        endpoint: Endpoint,
        /// The connect error: `NotFound` (no socket there), `ConnectionRefused`
        /// (a socket nobody listens on), `PermissionDenied`, …
        #[source]
        source: std::io::Error,
    },
    /// No protocol version in common.
    #[error("vm-catalogd speaks protocol versions {server}, this client {client}")]
    Incompatible {
        /// What the daemon speaks, when it said so.
        server: Versions,
        /// What this client speaks.
        client: Versions,
    },
    /// The daemon refused the call or failed it.
    #[error("{}: {}", .0.code, .0.message)]
    Daemon(ErrorBody),
    /// The connection closed or broke.
    #[error("connection to vm-catalogd lost")]
    Disconnected(#[source] Option<std::io::Error>),
    /// The daemon said goodbye (it is stopping).
    #[error("vm-catalogd closed the connection: {0}")]
    Goodbye(String),
    /// The daemon sent something this client cannot read.
    #[error("protocol error")]
    Protocol(#[source] ProtocolError),
    /// A stream was not read for too long while frames for it arrived: it
    /// was cancelled so that the connection's other calls go on.
    #[error("the stream was not read in time and was cancelled")]
    Overflow,
    /// A frame could not be built (a call too large for the frame size).
    #[error("cannot send the call")]
    Frame(#[source] FrameError),
}

/// What the daemon sent that this client cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// A datagram that is not a frame (bad magic, header or length).
    #[error("bad frame")]
    BadFrame(#[source] FrameError),
    /// A byte stream that cannot be cut into frames (garbage, a frame
    /// larger than negotiated, or the end of the stream inside a frame).
    #[error("bad byte stream")]
    BadStream(#[source] StreamError),
    /// A frame larger than the size negotiated in the handshake.
    #[error("the daemon sent a frame larger than negotiated")]
    FrameTooLarge,
    /// A frame whose body does not decode as what its kind announces.
    #[error("cannot decode the {kind:?} body")]
    BadBody {
        /// The kind its header announced.
        kind: FrameKind,
        /// Where the body stopped decoding as that kind.
        #[source]
        source: DecodeError,
    },
    /// A frame of a kind that has no place where it arrived.
    #[error("unexpected {kind:?} frame {context}")]
    UnexpectedFrame {
        /// The kind its header announced.
        kind: FrameKind,
        /// Which call or stream it came in for.
        context: FrameContext,
    },
    /// A `ListVms` stream whose end announced another number of entries
    /// than the stream carried.
    #[error("ListVms announced {announced} entries and sent {received}")]
    ListTotal {
        /// The count in `ListEnd`.
        announced: u32,
        /// The entries the stream's pages carried, all pages together.
        received: usize,
    },
}

/// Where a frame arrived, for [`ProtocolError::UnexpectedFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameContext {
    /// In answer to `Hello` (only `Welcome`, `Error` or `Goodbye` belong).
    Handshake,
    /// On the connection (a client never receives `Hello` or `Request`).
    Connection,
    /// For a unary call (only `Reply` or `Error` belong).
    Unary,
    /// In a stream (only `StreamItem`, `StreamEnd` or `Error` belong).
    Stream,
}

impl std::fmt::Display for FrameContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FrameContext::Handshake => "in answer to Hello",
            FrameContext::Connection => "from the daemon",
            FrameContext::Unary => "for a unary call",
            FrameContext::Stream => "in a stream",
        })
    }
}

/// A version range, printed as `1..=2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions(pub Option<VersionRange>);

impl std::fmt::Display for Versions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(r) => write!(f, "{}..={}", r.min, r.max),
            None => f.write_str("(unknown)"),
        }
    }
}

impl Error {
    /// The daemon's error code, if the daemon refused the call.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Error::Daemon(b) => Some(b.code),
            _ => None,
        }
    }

    /// No VM (or source) of that name.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::NotFound)
    }

    /// The peer's credentials do not allow the call.
    pub fn is_permission_denied(&self) -> bool {
        self.code() == Some(ErrorCode::PermissionDenied)
    }

    /// The daemon cannot be reached or does not speak a common version:
    /// trying again later may help.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Disconnected(_) | Error::Goodbye(_)
        ) || self.code() == Some(ErrorCode::ShuttingDown)
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
