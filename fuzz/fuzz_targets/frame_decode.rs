#![no_main]
//! Arbitrary datagrams through the frame decoder and every body decoder.

use libfuzzer_sys::fuzz_target;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;

fuzz_target!(|data: &[u8]| {
    let Ok(frame) = decode_frame(data, LIMIT_MAX_FRAME) else {
        return;
    };
    let body = frame.body;
    for compat in [Compat::Exact, Compat::PeerOlder, Compat::PeerNewer] {
        let _ = Request::decode(frame.header.method, body, compat);
        let _ = codec::decode::<Hello>(body, compat);
        let _ = codec::decode::<Welcome>(body, compat);
        let _ = codec::decode::<ErrorBody>(body, compat);
        let _ = codec::decode::<Info>(body, compat);
        let _ = codec::decode::<VmPage>(body, compat);
        let _ = codec::decode::<VmDetail>(body, compat);
        let _ = codec::decode::<SourceList>(body, compat);
        let _ = codec::decode::<ChangePage>(body, compat);
        let _ = codec::decode::<RescanOutcome>(body, compat);
        let _ = codec::decode::<Event>(body, compat);
    }
});
