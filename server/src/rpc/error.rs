//! Why a call or a connection failed, and how that looks on the wire: one
//! exhaustive match per error type, no `_` arm, so a new variant must choose
//! its code.
//!
//! A [`CallError`] ends one call (an `Error` frame with its call id); the
//! connection goes on unless the peer can no longer be told. A
//! [`ConnError`] ends the connection (an `Error` frame with call id 0, then
//! a close): the handshake failed, or a frame made the stream
//! untrustworthy.

use vm_catalog_protocol::codec::DecodeError;
use vm_catalog_protocol::{
    ErrorBody, ErrorCode, FrameError, FrameKind, HANDSHAKE_MAX_FRAME, Method, RequestError,
    SUPPORTED_VERSIONS, VersionRange, VmName,
};

use crate::rescan::RescanError;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    /// The request names an unknown method or does not decode.
    #[error(transparent)]
    BadRequest(RequestError),
    /// No VM of that name.
    #[error("no VM named {0}")]
    NotFound(VmName),
    /// The peer may not make this call.
    #[error("{method} needs root or the admin group")]
    PermissionDenied {
        /// The method.
        method: &'static str,
    },
    /// A UI VM may not make this call: VMs are read-only.
    #[error("{method} is not allowed from a VM: VMs are read-only")]
    ReadOnly {
        /// The method.
        method: &'static str,
    },
    /// Too many calls in flight on the connection.
    #[error("too many calls in flight on this connection")]
    Busy,
    /// The reply budget stayed spent for the whole send deadline: too many
    /// replies are waiting for peers to read them.
    #[error("too many replies are waiting to be read; retry later")]
    OverBudget,
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
    pub(super) fn is_reportable(&self) -> bool {
        !matches!(self, CallError::Disconnected(_) | CallError::Stalled)
    }

    /// The wire error.
    pub(super) fn to_wire(&self) -> ErrorBody {
        let code = match self {
            CallError::BadRequest(e) => match e {
                RequestError::UnknownMethod(_) => ErrorCode::UnknownMethod,
                RequestError::Invalid { .. } => ErrorCode::InvalidRequest,
            },
            CallError::NotFound(_) => ErrorCode::NotFound,
            CallError::PermissionDenied { .. } => ErrorCode::PermissionDenied,
            CallError::ReadOnly { .. } => ErrorCode::PermissionDenied,
            CallError::Busy => ErrorCode::Busy,
            CallError::OverBudget => ErrorCode::Busy,
            CallError::Timeout { .. } => ErrorCode::Timeout,
            CallError::Cancelled => ErrorCode::Cancelled,
            CallError::RescanFailed(RescanError::Stopped) => ErrorCode::ShuttingDown,
            CallError::RescanFailed(RescanError::ScanExhausted(_)) => ErrorCode::RescanFailed,
            CallError::RescanFailed(RescanError::Panicked { .. }) => ErrorCode::RescanFailed,
            CallError::ShuttingDown => ErrorCode::ShuttingDown,
            CallError::Encode(_) => ErrorCode::Internal,
            CallError::Stalled => ErrorCode::Timeout,
            CallError::Disconnected(_) => ErrorCode::Internal,
        };
        ErrorBody::new(code, self.to_string())
    }
}

/// A permission failure for `method`.
pub(super) fn denied(method: Method) -> CallError {
    CallError::PermissionDenied {
        method: method.name(),
    }
}

/// Why a connection is refused or closed.
#[derive(Debug, thiserror::Error)]
pub(super) enum ConnError {
    /// Over the connection limits.
    #[error("too many connections")]
    TooManyConnections,
    /// No `Hello` within the handshake timeout.
    #[error("no Hello in time")]
    NoHello,
    /// The `Hello` datagram is larger than a handshake frame may be.
    #[error("Hello too large")]
    HelloTooLarge,
    /// The first frame is not a `Hello`.
    #[error("expected Hello, got {0:?}")]
    ExpectedHello(FrameKind),
    /// A `Hello` with a method or call id: it belongs to the connection.
    #[error("Hello with method {method} and call id {call_id}: both must be 0")]
    HelloNotConnectionLevel {
        /// The method id it carried.
        method: u16,
        /// The call id it carried.
        call_id: u32,
    },
    /// The `Hello` body does not decode.
    #[error("bad Hello: {0}")]
    BadHello(DecodeError),
    /// The client's name is longer than the protocol allows.
    #[error("client name too long")]
    ClientNameTooLong,
    /// No protocol version in common.
    #[error(
        "client speaks versions {}..={}, server {}..={}",
        .client.min,
        .client.max,
        SUPPORTED_VERSIONS.min,
        SUPPORTED_VERSIONS.max
    )]
    UnsupportedVersion {
        /// The versions the client offered.
        client: VersionRange,
    },
    /// A datagram larger than the negotiated maximum.
    #[error("frame too large")]
    FrameTooLarge {
        /// The negotiated maximum.
        max: u32,
    },
    /// A datagram that is not a valid frame.
    #[error(transparent)]
    BadFrame(FrameError),
    /// A byte stream that cannot be cut into frames (garbage where a
    /// header should be).
    #[error(transparent)]
    BadStream(vm_catalog_protocol::stream::StreamError),
    /// A frame the client may not send after the handshake.
    #[error("unexpected {0:?} frame")]
    UnexpectedFrame(FrameKind),
    /// A request with the reserved call id 0.
    #[error("call id 0 is reserved")]
    ReservedCallId,
    /// A request whose call id is still in flight.
    #[error("call id {0} is already in flight")]
    CallIdInFlight(u32),
}

impl ConnError {
    /// The error for a datagram that does not decode as a frame.
    pub(super) fn of_frame(e: FrameError) -> ConnError {
        match e {
            FrameError::TooLarge { max, .. } => ConnError::FrameTooLarge { max },
            e => ConnError::BadFrame(e),
        }
    }

    /// The wire error (call id 0: the connection).
    pub(super) fn to_wire(&self) -> ErrorBody {
        let code = match self {
            ConnError::TooManyConnections => ErrorCode::Busy,
            ConnError::NoHello => ErrorCode::Timeout,
            ConnError::HelloTooLarge | ConnError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            ConnError::BadHello(_) | ConnError::ClientNameTooLong => ErrorCode::InvalidRequest,
            ConnError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            ConnError::ExpectedHello(_)
            | ConnError::HelloNotConnectionLevel { .. }
            | ConnError::BadFrame(_)
            | ConnError::BadStream(_)
            | ConnError::UnexpectedFrame(_)
            | ConnError::ReservedCallId
            | ConnError::CallIdInFlight(_) => ErrorCode::ProtocolViolation,
        };
        let mut body = ErrorBody::new(code, self.to_string());
        match self {
            ConnError::HelloTooLarge => body.max_frame = Some(HANDSHAKE_MAX_FRAME),
            ConnError::FrameTooLarge { max } => body.max_frame = Some(*max),
            ConnError::UnsupportedVersion { .. } => body.supported = Some(SUPPORTED_VERSIONS),
            ConnError::TooManyConnections
            | ConnError::NoHello
            | ConnError::ExpectedHello(_)
            | ConnError::HelloNotConnectionLevel { .. }
            | ConnError::BadHello(_)
            | ConnError::ClientNameTooLong
            | ConnError::BadFrame(_)
            | ConnError::BadStream(_)
            | ConnError::UnexpectedFrame(_)
            | ConnError::ReservedCallId
            | ConnError::CallIdInFlight(_) => {}
        }
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The connection-level bodies as they were built by hand before
    /// `ConnError`: codes, messages and the extra fields.
    #[test]
    fn connection_errors_keep_their_wire_bodies() {
        let b = ConnError::HelloTooLarge.to_wire();
        assert_eq!(
            (b.code, b.message.as_str(), b.max_frame),
            (ErrorCode::FrameTooLarge, "Hello too large", Some(4096))
        );
        let b = ConnError::FrameTooLarge { max: 65536 }.to_wire();
        assert_eq!(
            (b.code, b.message.as_str(), b.max_frame),
            (ErrorCode::FrameTooLarge, "frame too large", Some(65536))
        );
        let client = VersionRange { min: 7, max: 9 };
        let b = ConnError::UnsupportedVersion { client }.to_wire();
        assert_eq!(b.code, ErrorCode::UnsupportedVersion);
        assert_eq!(b.supported, Some(SUPPORTED_VERSIONS));
        assert_eq!(
            b.message,
            format!(
                "client speaks versions 7..=9, server {}..={}",
                SUPPORTED_VERSIONS.min, SUPPORTED_VERSIONS.max
            )
        );
        let b = ConnError::CallIdInFlight(7).to_wire();
        assert_eq!(
            (b.code, b.message.as_str()),
            (
                ErrorCode::ProtocolViolation,
                "call id 7 is already in flight"
            )
        );
        let b = ConnError::TooManyConnections.to_wire();
        assert_eq!(
            (b.code, b.message.as_str(), b.max_frame, b.supported),
            (ErrorCode::Busy, "too many connections", None, None)
        );
    }

    #[test]
    fn request_errors_keep_their_codes() {
        let unknown = CallError::BadRequest(RequestError::UnknownMethod(77)).to_wire();
        assert_eq!(
            (unknown.code, unknown.message.as_str()),
            (ErrorCode::UnknownMethod, "unknown method 77")
        );
        let e = vm_catalog_protocol::Request::decode(
            Method::GetVm.id(),
            &[0xff],
            vm_catalog_protocol::codec::Compat::Exact,
        )
        .unwrap_err();
        assert_eq!(
            CallError::BadRequest(e).to_wire().code,
            ErrorCode::InvalidRequest
        );
        let gone = CallError::NotFound("nosuch".parse().unwrap()).to_wire();
        assert_eq!(
            (gone.code, gone.message.as_str()),
            (ErrorCode::NotFound, "no VM named nosuch")
        );
    }
}
