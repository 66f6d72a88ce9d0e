//! Why a call failed, and how that looks on the wire.

use vm_catalog_protocol::{ErrorBody, ErrorCode, FrameError, Method};

use crate::rescan::RescanError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No VM of that name.
    #[error("no VM named {0}")]
    NotFound(String),
    /// The peer may not make this call.
    #[error("{method} needs root or the admin group")]
    PermissionDenied {
        /// The method.
        method: &'static str,
    },
    /// Too many calls in flight on the connection.
    #[error("too many calls in flight")]
    Busy,
    /// The call took too long.
    #[error("{method} timed out")]
    Timeout {
        /// The method.
        method: &'static str,
    },
    /// Cancelled by `Cancel`.
    #[error("cancelled")]
    Cancelled,
    /// The rescan gave no result.
    #[error("rescan failed: {0}")]
    RescanFailed(RescanError),
    /// The daemon is stopping.
    #[error("shutting down")]
    ShuttingDown,
    /// A reply could not be encoded (a bug: replies are sized to fit).
    #[error("cannot encode the reply")]
    Encode(#[source] FrameError),
    /// Something that should not happen.
    #[error("internal error: {0}")]
    Internal(String),
    /// The peer did not read within the send deadline: the connection was
    /// shut down.
    #[error("the peer does not read: disconnected")]
    Stalled,
    /// The connection broke while sending; nothing more can be said to the peer.
    #[error("connection lost")]
    Disconnected(#[source] std::io::Error),
}

impl CallError {
    /// Whether the peer can still be told about the error.
    pub fn is_reportable(&self) -> bool {
        !matches!(self, CallError::Disconnected(_) | CallError::Stalled)
    }

    /// The wire error. One exhaustive match: a new variant must choose its code.
    pub fn to_wire(&self) -> ErrorBody {
        let code = match self {
            CallError::NotFound(_) => ErrorCode::NotFound,
            CallError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            CallError::Busy => ErrorCode::Busy,
            CallError::Timeout { .. } => ErrorCode::Timeout,
            CallError::Cancelled => ErrorCode::Cancelled,
            CallError::RescanFailed(RescanError::Stopped) => ErrorCode::ShuttingDown,
            CallError::RescanFailed(RescanError::ScanExhausted(_)) => ErrorCode::RescanFailed,
            CallError::RescanFailed(RescanError::Panicked { .. }) => ErrorCode::RescanFailed,
            CallError::ShuttingDown => ErrorCode::ShuttingDown,
            CallError::Encode(_) => ErrorCode::Internal,
            CallError::Internal(_) => ErrorCode::Internal,
            CallError::Stalled => ErrorCode::Timeout,
            CallError::Disconnected(_) => ErrorCode::Internal,
        };
        ErrorBody::new(code, self.to_string())
    }
}

/// A permission failure for `method`.
pub fn denied(method: Method) -> CallError {
    CallError::PermissionDenied {
        method: method.name(),
    }
}
