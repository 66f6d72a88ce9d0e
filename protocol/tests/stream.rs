//! Properties of the stream framer: however a stream is cut into reads, the
//! frames that come out are the datagrams a `SOCK_SEQPACKET` peer would have
//! received; garbage never panics and never makes the framer hold more than
//! one max frame; the end of the stream is clean only between frames.

use proptest::prelude::*;
use vm_catalog_protocol::stream::{StreamError, StreamFramer};
use vm_catalog_protocol::{HEADER_LEN, LIMIT_MAX_FRAME, decode_frame};

/// A datagram as a SEQPACKET peer could send it: the magic, header version
/// 1 and a `body_len` that matches; any kind, flags, method, call id, body.
fn datagram(max_body: usize) -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 12]>(),
        proptest::collection::vec(any::<u8>(), 0..max_body),
    )
        .prop_map(|(fields, body)| {
            let mut d = vec![b'V', b'C', 1];
            d.extend_from_slice(&fields[..9]);
            d.extend_from_slice(&(body.len() as u32).to_le_bytes());
            d.extend_from_slice(&body);
            d
        })
}

/// Feeds `stream` in pieces of the given sizes (cycled), alternately through
/// `push` and through `space`/`filled`; returns the frames and the first
/// error. Checks the memory bound after every step.
fn feed(
    f: &mut StreamFramer,
    stream: &[u8],
    sizes: &[usize],
) -> (Vec<Vec<u8>>, Option<StreamError>) {
    let bound = (f.max_frame() as usize).max(HEADER_LEN);
    let mut frames = Vec::new();
    let mut at = 0;
    let mut step = 0;
    loop {
        loop {
            match f.next_frame() {
                Ok(Some(frame)) => frames.push(frame.to_vec()),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
        }
        assert!(f.allocated() <= bound, "{} > {bound}", f.allocated());
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
        assert!(n > 0, "no room after every frame was taken");
        at += n;
        step += 1;
        assert!(f.allocated() <= bound, "{} > {bound}", f.allocated());
    }
}

proptest! {
    #[test]
    fn arbitrary_chunking_gives_the_seqpacket_datagrams(
        datagrams in proptest::collection::vec(datagram(3000), 0..20),
        sizes in proptest::collection::vec(1usize..5000, 1..10),
    ) {
        let stream = datagrams.concat();
        let mut f = StreamFramer::new(LIMIT_MAX_FRAME);
        let (frames, err) = feed(&mut f, &stream, &sizes);
        prop_assert_eq!(err, None);
        prop_assert_eq!(&frames, &datagrams);
        // The same bytes, so `decode_frame` reads each as it reads the datagram.
        for (frame, d) in frames.iter().zip(&datagrams) {
            prop_assert_eq!(decode_frame(frame, LIMIT_MAX_FRAME), decode_frame(d, LIMIT_MAX_FRAME));
        }
    }

    #[test]
    fn garbage_never_panics_and_holds_at_most_one_frame(
        prefix in proptest::collection::vec(datagram(200), 0..4),
        garbage in proptest::collection::vec(any::<u8>(), 0..20_000),
        max_frame in prop_oneof![0u32..64, 64u32..=LIMIT_MAX_FRAME],
        sizes in proptest::collection::vec(1usize..70_000, 1..6),
    ) {
        let stream = [prefix.concat(), garbage].concat();
        let mut f = StreamFramer::new(max_frame);
        let (frames, err) = feed(&mut f, &stream, &sizes);
        // What came out is the start of the stream, frame by frame.
        let out = frames.concat();
        prop_assert_eq!(&out[..], &stream[..out.len()]);
        for frame in &frames {
            prop_assert!(frame.len() <= max_frame as usize);
            prop_assert_eq!(&frame[..3], b"VC\x01");
        }
        if err.is_none() {
            prop_assert_eq!(out.len(), stream.len(), "a clean end is between frames");
        }
    }

    #[test]
    fn the_end_is_clean_only_between_frames(
        datagrams in proptest::collection::vec(datagram(100), 1..8),
        cut in any::<proptest::sample::Index>(),
    ) {
        let stream = datagrams.concat();
        let cut = cut.index(stream.len() + 1);
        let boundaries: Vec<usize> = datagrams
            .iter()
            .scan(0, |at, d| { *at += d.len(); Some(*at) })
            .collect();
        let mut f = StreamFramer::new(LIMIT_MAX_FRAME);
        let (frames, err) = feed(&mut f, &stream[..cut], &[7]);
        let whole = boundaries.iter().filter(|&&b| b <= cut).count();
        prop_assert_eq!(frames.len(), whole);
        if cut == 0 || boundaries.contains(&cut) {
            prop_assert_eq!(err, None);
        } else {
            let last = if whole == 0 { 0 } else { boundaries[whole - 1] };
            prop_assert_eq!(err, Some(StreamError::Truncated { buffered: cut - last }));
        }
    }
}
