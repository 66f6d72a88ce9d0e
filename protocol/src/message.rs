//! Typed frame builders: the header fields follow from the call's type, so a
//! reply cannot go out with another method's id or kind.

use crate::calls::{Call, Streaming, Unary};
use crate::error::ErrorBody;
use crate::frame::{FrameError, FrameKind, HANDSHAKE_MAX_FRAME, encode_frame};
use crate::handshake::{Goodbye, Hello, Welcome};

/// A `Request` frame for call `call_id`.
pub fn request<C: Call>(call_id: u32, params: &C, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    encode_frame(
        FrameKind::Request,
        C::METHOD.id(),
        call_id,
        params,
        max_frame,
    )
}

/// The `Reply` frame of a unary call.
pub fn reply<C: Unary>(
    call_id: u32,
    reply: &C::Reply,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(FrameKind::Reply, C::METHOD.id(), call_id, reply, max_frame)
}

/// A `StreamItem` frame of a streaming call.
pub fn item<C: Streaming>(
    call_id: u32,
    item: &C::Item,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(
        FrameKind::StreamItem,
        C::METHOD.id(),
        call_id,
        item,
        max_frame,
    )
}

/// The `StreamEnd` frame of a streaming call.
pub fn end<C: Streaming>(
    call_id: u32,
    end: &C::End,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(
        FrameKind::StreamEnd,
        C::METHOD.id(),
        call_id,
        end,
        max_frame,
    )
}

/// An `Error` frame ending call `call_id` of `method` (both 0 for a
/// connection-level error).
pub fn error(
    call_id: u32,
    method: u16,
    body: &ErrorBody,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    encode_frame(FrameKind::Error, method, call_id, body, max_frame)
}

/// The `Hello` frame: call id 0, at most [`HANDSHAKE_MAX_FRAME`] bytes.
pub fn hello(hello: &Hello) -> Result<Vec<u8>, FrameError> {
    encode_frame(FrameKind::Hello, 0, 0, hello, HANDSHAKE_MAX_FRAME)
}

/// The `Welcome` frame: call id 0, at most [`HANDSHAKE_MAX_FRAME`] bytes.
pub fn welcome(welcome: &Welcome) -> Result<Vec<u8>, FrameError> {
    encode_frame(FrameKind::Welcome, 0, 0, welcome, HANDSHAKE_MAX_FRAME)
}

/// The `Goodbye` frame: call id 0, within the connection's `max_frame`.
pub fn goodbye(goodbye: &Goodbye, max_frame: u32) -> Result<Vec<u8>, FrameError> {
    encode_frame(FrameKind::Goodbye, 0, 0, goodbye, max_frame)
}
