#![no_main]
//! Arbitrary bytes through the stream framer, cut into arbitrary reads: it
//! never panics, never holds more than one max frame, gives the same frames
//! and the same error however the bytes are cut, and every frame it gives
//! is a prefix piece of the input that `decode_frame` reads as a datagram.

use libfuzzer_sys::fuzz_target;
use vm_catalog_protocol::stream::{StreamError, StreamFramer};
use vm_catalog_protocol::{HEADER_LEN, decode_frame};

/// The frames and the final error (`None`: a clean end), the input fed in
/// reads of the sizes `sizes` yields (cycled).
fn run(stream: &[u8], max_frame: u32, sizes: &[usize]) -> (Vec<Vec<u8>>, Option<StreamError>) {
    let bound = (max_frame as usize).max(HEADER_LEN);
    let mut f = StreamFramer::new(max_frame);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut step = 0;
    loop {
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => {
                    let _ = decode_frame(frame, max_frame);
                    frames.push(frame.to_vec());
                }
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(f.allocated() <= bound);
        if at == stream.len() {
            return (frames, f.finish().err());
        }
        let size = sizes[step % sizes.len()].min(stream.len() - at);
        let n = if step % 2 == 0 {
            f.push(&stream[at..at + size])
        } else {
            let space = f.space();
            let n = space.len().min(size);
            space[..n].copy_from_slice(&stream[at..at + n]);
            f.filled(n);
            n
        };
        assert!(n > 0);
        at += n;
        step += 1;
        assert!(f.allocated() <= bound);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    // Byte 0 and 1: the max frame size (0 to 130 KiB, in steps of 2).
    let max_frame = u32::from(u16::from_le_bytes([data[0], data[1]])) * 2;
    // Bytes 2 and 3: the read sizes.
    let sizes = [usize::from(data[2]) + 1, usize::from(data[3]) * 64 + 1, 1];
    let stream = &data[4..];
    let (frames, err) = run(stream, max_frame, &sizes);
    let out = frames.concat();
    assert_eq!(&out[..], &stream[..out.len()]);
    if err.is_none() {
        assert_eq!(out.len(), stream.len());
    }
    // However the bytes are cut, the outcome is the same.
    assert_eq!(run(stream, max_frame, &[stream.len().max(1)]), (frames, err));
});
