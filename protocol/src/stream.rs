//! Frames on a byte stream: the transport of a UI VM, whose hybrid vsock
//! connection reaches the host as a Unix `SOCK_STREAM` socket.
//!
//! On a stream the frames are sent back to back, each exactly the bytes of
//! one `SOCK_SEQPACKET` datagram: the 16-byte [header](crate::frame), then
//! the body, whose length the header's `body_len` gives. A sender writes
//! every frame whole ([`encode_frame`](crate::encode_frame) builds the same
//! bytes for both transports); a receiver cuts the stream back into frames
//! with a [`StreamFramer`] and hands each to
//! [`decode_frame`](crate::decode_frame), as it would a datagram.
//!
//! The framer is sans-I/O: bytes go in ([`StreamFramer::push`], or a read
//! straight into [`StreamFramer::space`]), whole frames come out
//! ([`StreamFramer::next_frame`]). It checks only what it needs to find
//! where a frame ends (the magic, the header version, and `body_len`
//! against the max frame size); all the other checks are `decode_frame`'s,
//! exactly as on `SOCK_SEQPACKET`. After a bad header the stream cannot be
//! resynchronised: the error repeats, and the connection must end.
//!
//! Memory is bounded: the framer never holds more than one max frame, and
//! it grows its buffer to a frame's announced length only after checking
//! that length against the limit.
//!
//! ```
//! use vm_catalog_protocol::stream::StreamFramer;
//! use vm_catalog_protocol::{HANDSHAKE_MAX_FRAME, decode_frame, message, FrameKind, Ping};
//!
//! let frame = message::request(1, &Ping { payload: vec![7] }, 65536).unwrap();
//! let mut framer = StreamFramer::new(HANDSHAKE_MAX_FRAME);
//! // The bytes may arrive in any pieces: a partial frame waits for more.
//! assert_eq!(framer.push(&frame[..5]), 5);
//! assert_eq!(framer.next_frame(), Ok(None));
//! framer.push(&frame[5..]);
//! let whole = framer.next_frame().unwrap().unwrap();
//! assert_eq!(decode_frame(whole, 65536).unwrap().header.kind, FrameKind::Request);
//! assert_eq!(framer.finish(), Ok(()), "the stream may end here");
//! ```

use crate::frame::{HEADER_LEN, HEADER_VERSION, MAGIC};

/// The vsock port a UI VM connects to on the host (CID 2) unless told
/// otherwise: the daemon listens on `<vm-dir>/<NAME>/vsock_22083` for it.
/// 22083 is `0x5643`, the frame magic "VC".
pub const DEFAULT_VSOCK_PORT: u32 = 0x5643;

/// How much room a read gets at least (unless the max frame is smaller),
/// so that small frames arrive many at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why a stream cannot be cut into frames. Each ends the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// A header that does not start with the magic: garbage.
    #[error("bad magic {0:02x?} on the stream")]
    BadMagic([u8; 2]),
    /// A header version this crate does not know, so neither where the
    /// frame ends.
    #[error("unsupported header version {0} on the stream")]
    UnsupportedHeaderVersion(u8),
    /// A header announcing a frame larger than the max frame size (checked
    /// before any of its body is buffered).
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced frame length, header included.
        len: u64,
        /// The framer's maximum frame length, in bytes (the connection's
        /// `max_frame`).
        max: u32,
    },
    /// The stream ended inside a frame.
    #[error("the stream ended inside a frame, {buffered} bytes into it")]
    Truncated {
        /// The bytes of the frame that arrived.
        buffered: usize,
    },
}

/// Cuts a byte stream into frames; see the [module docs](self).
///
/// Put bytes in with [`push`](Self::push), or read into
/// [`space`](Self::space) and report the count with
/// [`filled`](Self::filled); take frames out with
/// [`next_frame`](Self::next_frame) until it returns `Ok(None)`; at end of
/// file, [`finish`](Self::finish) tells a clean close from a truncated
/// frame.
#[derive(Debug, Clone)]
pub struct StreamFramer {
    /// The allocation; bytes `start..end` are buffered, not yet taken.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_frame: u32,
}

impl StreamFramer {
    /// A framer for frames of at most `max_frame` bytes, header included
    /// (`HANDSHAKE_MAX_FRAME` until the handshake has set the size). It
    /// allocates nothing until bytes arrive.
    pub fn new(max_frame: u32) -> Self {
        StreamFramer {
            buf: Vec::new(),
            start: 0,
            end: 0,
            max_frame,
        }
    }

    /// The max frame size frames are checked against.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Checks the frames not yet taken against `max_frame` from now on (the
    /// size the handshake negotiated). Buffered bytes are kept.
    pub fn set_max_frame(&mut self, max_frame: u32) {
        self.max_frame = max_frame;
    }

    /// Bytes buffered and not yet taken as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Bytes allocated for the buffer: at most the largest max frame size
    /// the framer has had (and 16 KiB while that is larger).
    pub fn allocated(&self) -> usize {
        self.buf.len()
    }

    /// Frees the buffer if nothing is buffered (an idle connection then
    /// holds no buffer); the next read allocates again.
    pub fn release(&mut self) {
        if self.start == self.end {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }

    /// The length of the frame at the front, once its header has arrived:
    /// checked against the magic, the header version and the limit.
    fn front_len(&self) -> Result<Option<usize>, StreamError> {
        let b = &self.buf[self.start..self.end];
        if b.len() < HEADER_LEN {
            return Ok(None);
        }
        if b[0..2] != MAGIC {
            return Err(StreamError::BadMagic([b[0], b[1]]));
        }
        if b[2] != HEADER_VERSION {
            return Err(StreamError::UnsupportedHeaderVersion(b[2]));
        }
        let body_len = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let len = HEADER_LEN as u64 + u64::from(body_len);
        if len > u64::from(self.max_frame) {
            return Err(StreamError::TooLarge {
                len,
                max: self.max_frame,
            });
        }
        // At most `max_frame`, a u32: fits.
        Ok(Some(len as usize))
    }

    /// Whether [`next_frame`](Self::next_frame) would return a frame now
    /// (for a caller that must know before it borrows the frame).
    pub fn has_frame(&self) -> Result<bool, StreamError> {
        Ok(self.front_len()?.is_some_and(|len| self.buffered() >= len))
    }

    /// Takes the next whole frame: header and body, the bytes of one
    /// datagram. `Ok(None)` while the frame at the front is partial (or no
    /// byte is buffered): read more. An error is final: the stream cannot be
    /// resynchronised, and the same error comes back on every later call.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, StreamError> {
        let Some(len) = self.front_len()? else {
            return Ok(None);
        };
        if self.buffered() < len {
            return Ok(None);
        }
        let at = self.start;
        self.start += len;
        if self.start == self.end {
            // Nothing left: the next bytes go to the front (the frame's
            // bytes stay where they are until then).
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[at..at + len]))
    }

    /// The bytes the frame at the front needs in all, as far as is known:
    /// the header, then the whole frame.
    fn needed(&self) -> usize {
        match self.front_len() {
            Ok(Some(len)) => len,
            Ok(None) => HEADER_LEN,
            // Garbage: no growth; `next_frame` reports it.
            Err(_) => self.buffered(),
        }
    }

    /// Room to read into; report what was read with
    /// [`filled`](Self::filled). Never empty after
    /// [`next_frame`](Self::next_frame) returned `Ok(None)`: the room holds
    /// at least the rest of the frame at the front, and the buffer never
    /// grows beyond the max frame size.
    pub fn space(&mut self) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let want = self.needed().max(READ_CHUNK.min(self.max_frame as usize));
        if self.buf.len() - self.start < want && self.start > 0 {
            // The frame at the front would not fit where it is: move it to
            // the front (it is shorter than one frame).
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.buf.len() - self.start < want {
            self.buf.resize(self.start + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Reports that `n` bytes were read into [`space`](Self::space).
    ///
    /// # Panics
    ///
    /// If `n` is larger than the space was.
    pub fn filled(&mut self, n: usize) {
        assert!(n <= self.buf.len() - self.end, "filled beyond the space");
        self.end += n;
    }

    /// Copies as many of `bytes` as fit (see [`space`](Self::space)); returns
    /// how many. Take the frames out, then push the rest: the framer buffers
    /// no more than about one frame.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let space = self.space();
        let n = space.len().min(bytes.len());
        space[..n].copy_from_slice(&bytes[..n]);
        self.end += n;
        n
    }

    /// At end of file (after [`next_frame`](Self::next_frame) returned
    /// `Ok(None)`): `Ok` if the stream ended between frames (a clean close),
    /// or why not (a garbage header, or a frame cut short).
    pub fn finish(&self) -> Result<(), StreamError> {
        if self.buffered() == 0 {
            return Ok(());
        }
        self.front_len()?;
        Err(StreamError::Truncated {
            buffered: self.buffered(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FrameKind, HANDSHAKE_MAX_FRAME, encode_frame};

    fn frame(call_id: u32, body_len: usize) -> Vec<u8> {
        encode_frame(
            FrameKind::Reply,
            1,
            call_id,
            serde_bytes::Bytes::new(&vec![9; body_len]),
            1 << 20,
        )
        .unwrap()
    }

    /// A header announcing `body_len`, valid otherwise.
    fn header(body_len: u32) -> Vec<u8> {
        let mut h = frame(1, 0)[..HEADER_LEN].to_vec();
        h[12..16].copy_from_slice(&body_len.to_le_bytes());
        h
    }

    #[test]
    fn frames_in_one_push_come_out_one_by_one() {
        let (a, b) = (frame(1, 3), frame(2, 200));
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(f.push(&both), both.len());
        assert_eq!(f.next_frame().unwrap(), Some(&a[..]));
        assert!(f.has_frame().unwrap());
        assert_eq!(f.next_frame().unwrap(), Some(&b[..]));
        assert_eq!(f.next_frame().unwrap(), None);
        assert_eq!(f.buffered(), 0);
        assert_eq!(f.finish(), Ok(()));
    }

    #[test]
    fn a_frame_read_through_space_byte_by_byte() {
        let a = frame(5, 40);
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        for (i, byte) in a.iter().enumerate() {
            assert_eq!(f.next_frame().unwrap(), None, "byte {i}");
            let space = f.space();
            assert!(!space.is_empty());
            space[0] = *byte;
            f.filled(1);
        }
        assert_eq!(f.next_frame().unwrap(), Some(&a[..]));
    }

    #[test]
    fn an_oversized_header_fails_before_its_body_is_buffered() {
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        f.push(&header(u32::MAX));
        let err = StreamError::TooLarge {
            len: u64::from(u32::MAX) + 16,
            max: HANDSHAKE_MAX_FRAME,
        };
        assert_eq!(f.next_frame(), Err(err.clone()));
        assert_eq!(f.has_frame(), Err(err.clone()));
        assert_eq!(f.finish(), Err(err));
        assert!(f.allocated() <= HANDSHAKE_MAX_FRAME as usize);
        // Pushing more does not buffer the body either.
        f.push(&[0; 10_000]);
        assert!(f.allocated() <= HANDSHAKE_MAX_FRAME as usize);
        // A frame of exactly the limit is fine.
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        let max = frame(1, HANDSHAKE_MAX_FRAME as usize - 16 - 2);
        assert_eq!(max.len(), HANDSHAKE_MAX_FRAME as usize);
        assert_eq!(f.push(&max), max.len());
        assert_eq!(f.next_frame().unwrap(), Some(&max[..]));
    }

    #[test]
    fn garbage_is_final() {
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        let mut bad = frame(1, 4);
        bad[0] = b'X';
        f.push(&[frame(7, 1), bad].concat());
        assert!(f.next_frame().unwrap().is_some(), "the frame before");
        for _ in 0..2 {
            assert_eq!(f.next_frame(), Err(StreamError::BadMagic([b'X', b'C'])));
        }
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        let mut bad = frame(1, 4);
        bad[2] = 2;
        f.push(&bad);
        assert_eq!(
            f.next_frame(),
            Err(StreamError::UnsupportedHeaderVersion(2))
        );
    }

    #[test]
    fn eof_inside_a_frame_or_its_header_is_truncation() {
        let a = frame(1, 10);
        for cut in [1, 15, 16, 20] {
            let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
            f.push(&a[..cut]);
            assert_eq!(f.next_frame(), Ok(None));
            assert_eq!(f.finish(), Err(StreamError::Truncated { buffered: cut }));
        }
    }

    #[test]
    fn the_limit_set_after_the_handshake_applies_to_buffered_frames() {
        let big = frame(2, 10_000);
        let mut f = StreamFramer::new(HANDSHAKE_MAX_FRAME);
        f.push(&big[..100]);
        assert!(matches!(f.next_frame(), Err(StreamError::TooLarge { .. })));
        f.set_max_frame(65536);
        assert_eq!(f.next_frame(), Ok(None));
        let mut at = 100;
        while at < big.len() {
            at += f.push(&big[at..]);
        }
        assert_eq!(f.next_frame().unwrap(), Some(&big[..]));
        assert!(f.allocated() <= 65536);
    }

    #[test]
    fn release_frees_an_idle_buffer_only() {
        let mut f = StreamFramer::new(65536);
        let a = frame(1, 3);
        f.push(&a[..4]);
        f.release();
        assert!(f.allocated() > 0, "a partial frame is kept");
        f.push(&a[4..]);
        assert!(f.next_frame().unwrap().is_some());
        f.release();
        assert_eq!(f.allocated(), 0);
        assert_eq!(f.buffered(), 0);
    }
}
