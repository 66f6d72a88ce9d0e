//! Frames: one frame per datagram, a fixed 16-byte header, then a postcard body.
//!
//! ```text
//! offset size field
//!      0    2 magic        "VC" (0x56 0x43)
//!      2    1 header       header version, 1
//!      3    1 kind         FrameKind
//!      4    2 flags        u16 LE, 0 in protocol version 1
//!      6    2 method       u16 LE, Method id (0 for connection-level frames)
//!      8    4 call_id      u32 LE, chosen by the client (0 for connection-level frames)
//!     12    4 body_len     u32 LE, must equal datagram length - 16
//!     16    … body         postcard, see `codec`
//! ```
//!
//! The header can be read without decoding the body, so a receiver can answer
//! an unknown method, a wrong call id or a frame that is too large with a typed
//! error. A frame is never empty (an empty datagram reads like EOF on a
//! `SOCK_SEQPACKET` socket).

use serde::Serialize;

use crate::codec::{self, EncodeError};

/// The first two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"VC";
/// The header layout version this crate reads and writes.
pub const HEADER_VERSION: u8 = 1;
/// Length of the fixed header.
pub const HEADER_LEN: usize = 16;
/// The largest frame either side sends before the handshake has set one:
/// `Hello`, `Welcome` and a handshake `Error` must fit.
pub const HANDSHAKE_MAX_FRAME: u32 = 4096;
/// The smallest max frame size a peer may negotiate. Every single record the
/// server sends (one VM entry with its capped diagnostics) fits in it.
pub const MIN_MAX_FRAME: u32 = 16 * 1024;
/// The max frame size a client asks for when it has no reason to want another.
pub const DEFAULT_MAX_FRAME: u32 = 64 * 1024;
/// The largest max frame size a server grants. The kernel's default socket
/// buffer allows datagrams of about 208 KiB; 128 KiB keeps a margin.
pub const LIMIT_MAX_FRAME: u32 = 128 * 1024;

/// What a frame is. The numbering is part of the wire format: append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// Client → server, first frame of a connection.
    Hello = 1,
    /// Server → client, accepts the handshake.
    Welcome = 2,
    /// Client → server, a call.
    Request = 3,
    /// Server → client, the one reply of a unary call.
    Reply = 4,
    /// Server → client, one item of a streaming call.
    StreamItem = 5,
    /// Server → client, the successful end of a streaming call.
    StreamEnd = 6,
    /// Server → client, ends a call (or, with call id 0, the connection) with an error.
    Error = 7,
    /// Server → client, the server is closing the connection.
    Goodbye = 8,
}

impl FrameKind {
    /// The kind with this wire number.
    pub fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::Hello,
            2 => Self::Welcome,
            3 => Self::Request,
            4 => Self::Reply,
            5 => Self::StreamItem,
            6 => Self::StreamEnd,
            7 => Self::Error,
            8 => Self::Goodbye,
            _ => return None,
        })
    }
}

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// What the frame is.
    pub kind: FrameKind,
    /// Flags; none are defined in protocol version 1.
    pub flags: u16,
    /// The call's method id, or 0.
    pub method: u16,
    /// The call id, or 0 for connection-level frames.
    pub call_id: u32,
    /// Length of the body.
    pub body_len: u32,
}

impl Header {
    /// Writes the 16 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..2].copy_from_slice(&MAGIC);
        b[2] = HEADER_VERSION;
        b[3] = self.kind as u8;
        b[4..6].copy_from_slice(&self.flags.to_le_bytes());
        b[6..8].copy_from_slice(&self.method.to_le_bytes());
        b[8..12].copy_from_slice(&self.call_id.to_le_bytes());
        b[12..16].copy_from_slice(&self.body_len.to_le_bytes());
        b
    }
}

/// A decoded frame that borrows its body from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The 16-byte header, checked: magic, version, kind, flags, length.
    pub header: Header,
    /// The undecoded postcard body.
    pub body: &'a [u8],
}

/// Why a datagram is not a frame, or a frame could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Zero bytes: on `SOCK_SEQPACKET` this is what EOF looks like.
    #[error("empty datagram")]
    Empty,
    /// Shorter than the header.
    #[error("datagram of {len} bytes is shorter than the {HEADER_LEN}-byte header")]
    TooShort {
        /// The datagram's length in bytes.
        len: usize,
    },
    /// The first two bytes are not the protocol's magic: not a vm-catalog
    /// frame at all.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 2]),
    /// A header version we do not know.
    #[error("unsupported header version {0}")]
    UnsupportedHeaderVersion(u8),
    /// A frame kind we do not know.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flags that protocol version 1 does not define.
    #[error("unknown flags 0x{0:04x}")]
    UnknownFlags(u16),
    /// The header announces more body than the datagram holds.
    #[error("truncated frame: header announces {declared} body bytes, datagram holds {actual}")]
    Truncated {
        /// `body_len` from the header.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// The datagram holds bytes after the announced body.
    #[error("trailing garbage: header announces {declared} body bytes, datagram holds {actual}")]
    TrailingGarbage {
        /// `body_len` from the header.
        declared: u32,
        /// Bytes after the header.
        actual: usize,
    },
    /// The frame is larger than the negotiated maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Frame length, or at least this much when the datagram was truncated.
        len: usize,
        /// The connection's negotiated `max_frame`, in bytes.
        max: u32,
    },
    /// The body could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

/// Parses and checks a datagram against `max_frame`.
pub fn decode_frame(datagram: &[u8], max_frame: u32) -> Result<Frame<'_>, FrameError> {
    let len = datagram.len();
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > max_frame as usize {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    if len < HEADER_LEN {
        return Err(FrameError::TooShort { len });
    }
    let magic = [datagram[0], datagram[1]];
    if magic != MAGIC {
        return Err(FrameError::BadMagic(magic));
    }
    if datagram[2] != HEADER_VERSION {
        return Err(FrameError::UnsupportedHeaderVersion(datagram[2]));
    }
    let kind = FrameKind::from_u8(datagram[3]).ok_or(FrameError::UnknownKind(datagram[3]))?;
    let u16_at = |i: usize| u16::from_le_bytes([datagram[i], datagram[i + 1]]);
    let u32_at = |i: usize| {
        u32::from_le_bytes([
            datagram[i],
            datagram[i + 1],
            datagram[i + 2],
            datagram[i + 3],
        ])
    };
    let flags = u16_at(4);
    if flags != 0 {
        return Err(FrameError::UnknownFlags(flags));
    }
    let header = Header {
        kind,
        flags,
        method: u16_at(6),
        call_id: u32_at(8),
        body_len: u32_at(12),
    };
    let body = &datagram[HEADER_LEN..];
    let declared = header.body_len;
    match (declared as usize).cmp(&body.len()) {
        std::cmp::Ordering::Greater => Err(FrameError::Truncated {
            declared,
            actual: body.len(),
        }),
        std::cmp::Ordering::Less => Err(FrameError::TrailingGarbage {
            declared,
            actual: body.len(),
        }),
        std::cmp::Ordering::Equal => Ok(Frame { header, body }),
    }
}

/// Builds a frame: header plus the postcard encoding of `body`, checked
/// against `max_frame`.
pub fn encode_frame<T: Serialize + ?Sized>(
    kind: FrameKind,
    method: u16,
    call_id: u32,
    body: &T,
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    build_frame(kind, method, call_id, 64, max_frame, |out| {
        codec::encode_into(body, out)
    })
}

/// The length of the frame [`encode_frame`] would build around `body`,
/// without building it (records inside are still encoded on their own to
/// learn their lengths).
pub fn frame_len<T: Serialize + ?Sized>(body: &T) -> Result<usize, FrameError> {
    Ok(HEADER_LEN + codec::encoded_len(body)?)
}

/// Builds a frame whose body `write` appends, into one buffer with room for
/// `body_capacity` body bytes reserved up front (so a body of known length
/// is written once, with no copy and no growth); checked against
/// `max_frame`.
pub fn build_frame(
    kind: FrameKind,
    method: u16,
    call_id: u32,
    body_capacity: usize,
    max_frame: u32,
    write: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<Vec<u8>, FrameError> {
    let mut buf = Vec::with_capacity(HEADER_LEN + body_capacity);
    buf.extend_from_slice(&[0u8; HEADER_LEN]);
    write(&mut buf)?;
    if buf.len() > max_frame as usize {
        return Err(FrameError::TooLarge {
            len: buf.len(),
            max: max_frame,
        });
    }
    let header = Header {
        kind,
        flags: 0,
        method,
        call_id,
        body_len: (buf.len() - HEADER_LEN) as u32,
    };
    buf[..HEADER_LEN].copy_from_slice(&header.to_bytes());
    Ok(buf)
}

/// Builds a frame around a body that is already encoded (pages assembled
/// from encoded records), checked against `max_frame`.
pub fn frame_with_body(
    kind: FrameKind,
    method: u16,
    call_id: u32,
    body: &[u8],
    max_frame: u32,
) -> Result<Vec<u8>, FrameError> {
    let len = HEADER_LEN + body.len();
    if len > max_frame as usize {
        return Err(FrameError::TooLarge {
            len,
            max: max_frame,
        });
    }
    build_frame(kind, method, call_id, body.len(), max_frame, |out| {
        out.extend_from_slice(body);
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_around_an_encoded_body_equals_the_encoded_frame() {
        let body = crate::codec::encode(&(3u8, "ab")).unwrap();
        assert_eq!(
            frame_with_body(FrameKind::Request, 1, 7, &body, 1024).unwrap(),
            encode_frame(FrameKind::Request, 1, 7, &(3u8, "ab"), 1024).unwrap()
        );
        assert!(matches!(
            frame_with_body(FrameKind::Request, 1, 7, &[0; 100], 64),
            Err(FrameError::TooLarge { len: 116, max: 64 })
        ));
    }

    fn ping_frame() -> Vec<u8> {
        encode_frame(FrameKind::Request, 1, 7, &(3u8, "ab"), 1024).unwrap()
    }

    #[test]
    fn round_trip() {
        let b = ping_frame();
        let f = decode_frame(&b, 1024).unwrap();
        assert_eq!(f.header.kind, FrameKind::Request);
        assert_eq!(f.header.method, 1);
        assert_eq!(f.header.call_id, 7);
        assert_eq!(f.body, &[3, 2, b'a', b'b']);
    }

    #[test]
    fn rejects_each_malformation() {
        let good = ping_frame();
        assert_eq!(decode_frame(&[], 1024), Err(FrameError::Empty));
        assert_eq!(
            decode_frame(&good[..10], 1024),
            Err(FrameError::TooShort { len: 10 })
        );
        let mut b = good.clone();
        b[0] = b'X';
        assert_eq!(
            decode_frame(&b, 1024),
            Err(FrameError::BadMagic([b'X', b'C']))
        );
        let mut b = good.clone();
        b[2] = 2;
        assert_eq!(
            decode_frame(&b, 1024),
            Err(FrameError::UnsupportedHeaderVersion(2))
        );
        let mut b = good.clone();
        b[3] = 99;
        assert_eq!(decode_frame(&b, 1024), Err(FrameError::UnknownKind(99)));
        let mut b = good.clone();
        b[4] = 1;
        assert_eq!(decode_frame(&b, 1024), Err(FrameError::UnknownFlags(1)));
        assert_eq!(
            decode_frame(&good[..good.len() - 1], 1024),
            Err(FrameError::Truncated {
                declared: 4,
                actual: 3
            })
        );
        let mut b = good.clone();
        b.push(0);
        assert_eq!(
            decode_frame(&b, 1024),
            Err(FrameError::TrailingGarbage {
                declared: 4,
                actual: 5
            })
        );
        assert_eq!(
            decode_frame(&good, 19),
            Err(FrameError::TooLarge { len: 20, max: 19 })
        );
    }

    #[test]
    fn encode_refuses_oversized_bodies() {
        let big = vec![0u8; 100];
        assert!(matches!(
            encode_frame(FrameKind::Reply, 1, 1, &big, 64),
            Err(FrameError::TooLarge { max: 64, .. })
        ));
    }
}
