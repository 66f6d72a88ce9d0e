//! The body of an `Error` frame.

use serde::{Deserialize, Serialize};

use crate::code::ErrorCode;
use crate::handshake::VersionRange;

/// Why a call (or, with call id 0, the connection) failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorBody {
    /// What failed, as a number that never changes meaning (§6 of
    /// `docs/protocol.md`); a number this build does not know reads as
    /// `ErrorCode::Other`.
    pub code: ErrorCode,
    /// Human-readable explanation; never parsed.
    pub message: String,
    /// With `UnsupportedVersion`: the versions the server speaks.
    pub supported: Option<VersionRange>,
    /// With `FrameTooLarge`: the maximum frame size.
    pub max_frame: Option<u32>,
}

impl ErrorBody {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorBody {
            code,
            message: message.into(),
            supported: None,
            max_frame: None,
        }
    }
}
