//! The wire protocol of `vm-catalogd`: framing, handshake, calls, catalog
//! types and errors. No I/O, no runtime: a leaf crate that the daemon, the
//! client library and any other implementation share.
//!
//! A connection is a `SOCK_SEQPACKET` socket. Every datagram is one
//! [frame]: a 16-byte header, then a postcard [body](codec). The client
//! sends [`Hello`], the server answers [`Welcome`]; then the client makes
//! [calls], each with its own call id, and the server answers each with
//! one `Reply`, or with `StreamItem`s and a `StreamEnd`, or with an `Error`.
//! Lists travel as length-delimited [records], each trimmed to fit
//! any frame, so a server can encode them once and assemble pages from them.
//!
//! `docs/protocol.md` in the repository is the complete specification.
//!
//! ```
//! use vm_catalog_protocol::{codec::Compat, decode_frame, message, FrameKind, GetVm, Request};
//!
//! let frame = message::request(1, &GetVm { name: "netvm".parse().unwrap() }, 65536).unwrap();
//! let f = decode_frame(&frame, 65536).unwrap();
//! assert_eq!(f.header.kind, FrameKind::Request);
//! let req = Request::decode(f.header.method, f.body, Compat::Exact).unwrap();
//! assert!(matches!(req, Request::GetVm(g) if g.name.as_str() == "netvm"));
//! ```

#![deny(missing_docs)]

pub mod calls;
pub mod catalog;
pub mod code;
pub mod codec;
pub mod cursor;
pub mod error;
pub mod frame;
pub mod handshake;
pub mod id;
pub mod message;
pub mod names;
pub mod records;
pub mod stream;
mod text;

pub use calls::*;
pub use catalog::*;
pub use code::{DiagCode, ErrorCode};
pub use error::ErrorBody;
pub use frame::{
    DEFAULT_MAX_FRAME, Frame, FrameError, FrameKind, HANDSHAKE_MAX_FRAME, HEADER_LEN, Header,
    LIMIT_MAX_FRAME, MIN_MAX_FRAME, build_frame, decode_frame, encode_frame, frame_len,
    frame_with_body,
};
pub use handshake::*;
pub use id::{MAX_VM_ID_LEN, VmId, VmIdError};
pub use names::{MAX_NAME_LEN, NameError, SourceLabel, VmName, check_vm_name};
pub use records::{EventTag, RECORD_BUDGET};
