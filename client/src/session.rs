//! The client side of the protocol, without I/O: what both clients send and
//! how they read what comes back, whatever carries the frames.
//!
//! - The handshake: the `Hello` frame for some [`ConnectOptions`], and
//!   [`Session::accept`], which reads the answer to it.
//! - Frame classification ([`Session::classify`]): a frame either belongs to
//!   a call ([`Inbound::Call`]) or ends the connection ([`Closed`]).
//! - Reply and stream assembly: a call's frames become its reply
//!   ([`Session::reply`]) or the steps of its stream ([`Session::step`]).
//!
//! [`crate::Client`] and [`crate::BlockingClient`] only move bytes: a
//! transport hands whole frames to the session and sends the frames it
//! builds.

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    Call, Cancel, DEFAULT_MAX_FRAME, ErrorBody, ErrorCode, Features, FrameKind, Goodbye,
    HANDSHAKE_MAX_FRAME, Hello, PROTOCOL_VERSION, SUPPORTED_VERSIONS, Streaming, Unary, Welcome,
    decode_frame, message,
};

use crate::error::{Error, FrameContext, ProtocolError, Result, Versions};

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Sent in `Hello`, for the daemon's logs.
    pub client_name: String,
    /// The largest frame to ask for.
    pub max_frame: u32,
    /// Time allowed for connecting and the handshake.
    pub timeout: Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            client_name: format!("vm-catalog/{}", env!("CARGO_PKG_VERSION")),
            max_frame: DEFAULT_MAX_FRAME,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Why the connection ended, as every pending call learns it.
#[derive(Debug, Clone)]
pub(crate) enum Closed {
    /// The daemon closed the connection.
    Eof,
    /// Receiving failed.
    Io(Arc<std::io::Error>),
    /// The daemon said goodbye, with this reason.
    Goodbye(String),
    /// The daemon ended the connection with an error (call id 0).
    Refused(ErrorBody),
    /// The daemon sent something this client cannot read.
    Protocol(ProtocolError),
}

impl Closed {
    /// The error a call gets when the connection ended under it.
    pub(crate) fn to_error(&self) -> Error {
        match self {
            Closed::Eof => Error::Disconnected(None),
            Closed::Io(e) => {
                Error::Disconnected(Some(std::io::Error::new(e.kind(), e.to_string())))
            }
            Closed::Goodbye(r) => Error::Goodbye(r.clone()),
            Closed::Refused(b) => Error::Daemon(b.clone()),
            Closed::Protocol(p) => Error::Protocol(p.clone()),
        }
    }
}

/// The kinds of frame that belong to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallFrame {
    /// The reply of a unary call.
    Reply,
    /// One item of a stream.
    StreamItem,
    /// The end of a stream.
    StreamEnd,
    /// The call failed.
    Error,
}

impl CallFrame {
    /// Whether the frame is the call's last.
    pub(crate) fn is_terminal(self) -> bool {
        match self {
            CallFrame::StreamItem => false,
            CallFrame::Reply | CallFrame::StreamEnd | CallFrame::Error => true,
        }
    }

    fn kind(self) -> FrameKind {
        match self {
            CallFrame::Reply => FrameKind::Reply,
            CallFrame::StreamItem => FrameKind::StreamItem,
            CallFrame::StreamEnd => FrameKind::StreamEnd,
            CallFrame::Error => FrameKind::Error,
        }
    }
}

/// What a frame from the daemon means.
#[derive(Debug)]
pub(crate) enum Inbound<'a> {
    /// A frame of call `call_id` (which may be unknown: a late frame of a
    /// call that is over).
    Call {
        /// The call.
        call_id: u32,
        /// What the frame is.
        kind: CallFrame,
        /// The undecoded body.
        body: &'a [u8],
    },
    /// The connection is over.
    Closed(Closed),
}

/// One step of a stream.
#[derive(Debug)]
pub(crate) enum Step<C: Streaming> {
    /// An item; one that does not decode does not end the stream.
    Item(Result<C::Item>),
    /// The end: the stream is over.
    End(C::End),
    /// The stream failed and is over.
    Failed(Error),
}

/// A connection after its handshake: what the daemon granted, and how to
/// read its bodies.
#[derive(Debug)]
pub(crate) struct Session {
    welcome: Welcome,
    compat: Compat,
}

impl Session {
    /// The `Hello` frame for `opts`.
    pub(crate) fn hello(opts: &ConnectOptions) -> Result<Vec<u8>> {
        let hello = Hello {
            client: opts.client_name.clone(),
            versions: SUPPORTED_VERSIONS,
            max_frame: opts.max_frame,
            features: Features::KNOWN,
        };
        message::hello(&hello).map_err(Error::Frame)
    }

    /// Reads the daemon's answer to `Hello` (one whole frame): the session
    /// it grants, or why not.
    pub(crate) fn accept(frame: &[u8]) -> Result<Session> {
        let frame = decode_frame(frame, HANDSHAKE_MAX_FRAME)
            .map_err(|e| Error::Protocol(ProtocolError::BadFrame(e)))?;
        match frame.header.kind {
            FrameKind::Welcome => {
                let welcome: Welcome = decode(FrameKind::Welcome, frame.body, Compat::Record)?;
                Ok(Session {
                    compat: Compat::between(PROTOCOL_VERSION, welcome.supported.max),
                    welcome,
                })
            }
            FrameKind::Error => {
                let body: ErrorBody = decode(FrameKind::Error, frame.body, Compat::Record)?;
                if body.code == ErrorCode::UnsupportedVersion {
                    return Err(Error::Incompatible {
                        server: Versions(body.supported),
                        client: Versions(Some(SUPPORTED_VERSIONS)),
                    });
                }
                Err(Error::Daemon(body))
            }
            FrameKind::Goodbye => {
                let g: Goodbye = decode(FrameKind::Goodbye, frame.body, Compat::Record)?;
                Err(Error::Goodbye(g.reason))
            }
            kind @ (FrameKind::Hello
            | FrameKind::Request
            | FrameKind::Reply
            | FrameKind::StreamItem
            | FrameKind::StreamEnd) => Err(Error::Protocol(ProtocolError::UnexpectedFrame {
                kind,
                context: FrameContext::Handshake,
            })),
        }
    }

    /// The daemon's `Welcome`.
    pub(crate) fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// The largest frame either side may send.
    pub(crate) fn max_frame(&self) -> u32 {
        self.welcome.max_frame
    }

    /// The `Request` frame of call `call_id`.
    pub(crate) fn request<C: Call>(&self, call_id: u32, params: &C) -> Result<Vec<u8>> {
        message::request(call_id, params, self.welcome.max_frame).map_err(Error::Frame)
    }

    /// The request (itself call `call_id`) that cancels call `target`.
    pub(crate) fn cancel(&self, call_id: u32, target: u32) -> Result<Vec<u8>> {
        self.request(call_id, &Cancel { call_id: target })
    }

    /// What one whole frame from the daemon means.
    pub(crate) fn classify<'a>(&self, frame: &'a [u8]) -> Inbound<'a> {
        let frame = match decode_frame(frame, self.welcome.max_frame) {
            Ok(f) => f,
            Err(e) => return Inbound::Closed(Closed::Protocol(ProtocolError::BadFrame(e))),
        };
        let call_id = frame.header.call_id;
        let kind = match frame.header.kind {
            FrameKind::Goodbye => {
                let reason = codec::decode::<Goodbye>(frame.body, Compat::Record)
                    .map(|g| g.reason)
                    .unwrap_or_else(|_| "goodbye".into());
                return Inbound::Closed(Closed::Goodbye(reason));
            }
            FrameKind::Error if call_id == 0 => {
                return Inbound::Closed(
                    match codec::decode::<ErrorBody>(frame.body, Compat::Record) {
                        Ok(b) => Closed::Refused(b),
                        Err(source) => Closed::Protocol(ProtocolError::BadBody {
                            kind: FrameKind::Error,
                            source,
                        }),
                    },
                );
            }
            FrameKind::Reply => CallFrame::Reply,
            FrameKind::StreamItem => CallFrame::StreamItem,
            FrameKind::StreamEnd => CallFrame::StreamEnd,
            FrameKind::Error => CallFrame::Error,
            kind @ (FrameKind::Hello | FrameKind::Welcome | FrameKind::Request) => {
                return Inbound::Closed(Closed::Protocol(ProtocolError::UnexpectedFrame {
                    kind,
                    context: FrameContext::Connection,
                }));
            }
        };
        Inbound::Call {
            call_id,
            kind,
            body: frame.body,
        }
    }

    /// The outcome of unary call `C` from its (terminal) frame.
    pub(crate) fn reply<C: Unary>(&self, kind: CallFrame, body: &[u8]) -> Result<C::Reply> {
        match kind {
            CallFrame::Reply => self.decode(kind, body),
            CallFrame::Error => Err(self.failure(body)),
            CallFrame::StreamItem | CallFrame::StreamEnd => {
                Err(Error::Protocol(ProtocolError::UnexpectedFrame {
                    kind: kind.kind(),
                    context: FrameContext::Unary,
                }))
            }
        }
    }

    /// What one frame of streaming call `C` means.
    pub(crate) fn step<C: Streaming>(&self, kind: CallFrame, body: &[u8]) -> Step<C> {
        match kind {
            CallFrame::StreamItem => Step::Item(self.decode(kind, body)),
            CallFrame::StreamEnd => match self.decode(kind, body) {
                Ok(end) => Step::End(end),
                Err(e) => Step::Failed(e),
            },
            CallFrame::Error => Step::Failed(self.failure(body)),
            CallFrame::Reply => Step::Failed(Error::Protocol(ProtocolError::UnexpectedFrame {
                kind: kind.kind(),
                context: FrameContext::Stream,
            })),
        }
    }

    /// The daemon's error from the body of a call's `Error` frame.
    fn failure(&self, body: &[u8]) -> Error {
        match self.decode(CallFrame::Error, body) {
            Ok(b) => Error::Daemon(b),
            Err(e) => e,
        }
    }

    fn decode<T: DeserializeOwned>(&self, kind: CallFrame, body: &[u8]) -> Result<T> {
        decode(kind.kind(), body, self.compat)
    }
}

fn decode<T: DeserializeOwned>(kind: FrameKind, body: &[u8], compat: Compat) -> Result<T> {
    codec::decode(body, compat)
        .map_err(|source| Error::Protocol(ProtocolError::BadBody { kind, source }))
}

#[cfg(test)]
mod tests;
