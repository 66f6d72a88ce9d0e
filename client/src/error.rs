//! Client errors: transport failures, version mismatch, and the daemon's refusals.

use std::path::PathBuf;

use vm_catalog_protocol::{ErrorBody, ErrorCode, FrameError, VersionRange};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon's socket could not be reached.
    #[error("cannot reach vm-catalogd at {path}")]
    Unreachable {
        /// The socket path.
        path: PathBuf,
        /// Why.
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
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A stream was not read for too long while frames for it arrived: it
    /// was cancelled so that the connection's other calls go on.
    #[error("the stream was not read in time and was cancelled")]
    Overflow,
    /// A frame could not be built (a call too large for the frame size).
    #[error("cannot send the call")]
    Frame(#[source] FrameError),
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
