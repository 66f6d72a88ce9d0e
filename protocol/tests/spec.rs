//! What `docs/protocol.md` says about encodings a client written from it
//! alone must get right (issue 22, item 8): the width of an enum tag, that
//! an unknown variant is an invalid body, and how a `Hello` that ends
//! before `versions.max` reads.

use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;

#[test]
fn an_enum_tag_is_a_u32_varint_and_an_unknown_variant_is_invalid() {
    // Writers: one byte (every enum of version 1 has fewer than 128 variants).
    assert_eq!(codec::encode(&VmState::Unavailable).unwrap(), [3]);
    assert_eq!(codec::encode(&ApplyStatus::FailedAfterSwitch).unwrap(), [6]);
    // Readers: a longer form of the same value, up to the 5 bytes of a u32.
    for long in [&[0x82, 0x00][..], &[0x82, 0x80, 0x80, 0x80, 0x00]] {
        let v: VmState = codec::decode(long, Compat::Exact).unwrap();
        assert_eq!(v, VmState::Rejected, "{long:x?}");
    }
    // More than 5 bytes, or a value past u32, is not a tag.
    for bad in [
        &[0x82, 0x80, 0x80, 0x80, 0x80, 0x00][..],
        &[0x80, 0x80, 0x80, 0x80, 0x10],
    ] {
        assert!(
            codec::decode::<VmState>(bad, Compat::Exact).is_err(),
            "{bad:x?}"
        );
    }
    // The index after the last variant listed in §6 is an invalid body, in
    // every mode.
    for mode in [
        Compat::Exact,
        Compat::PeerNewer,
        Compat::PeerOlder,
        Compat::Record,
    ] {
        assert!(codec::decode::<VmState>(&[4], mode).is_err());
        assert!(codec::decode::<SourceState>(&[4], mode).is_err());
        assert!(codec::decode::<ApplyStatus>(&[7], mode).is_err());
        assert!(codec::decode::<RescanTrigger>(&[6], mode).is_err());
    }
}

#[test]
fn a_hello_that_ends_before_versions_max_reads_as_version_zero() {
    let whole = codec::encode(&Hello {
        client: "c".into(),
        versions: VersionRange { min: 1, max: 1 },
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    })
    .unwrap();
    // "c" is 2 bytes, then min: cut after it, and before it.
    for cut in [3, 2] {
        let h: Hello = codec::decode(&whole[..cut], Compat::Record).unwrap();
        assert_eq!(h.versions.max, 0, "cut at {cut}");
        assert_eq!(SUPPORTED_VERSIONS.negotiate(h.versions), None);
    }
    // min > max: no version in the range.
    assert_eq!(
        SUPPORTED_VERSIONS.negotiate(VersionRange { min: 2, max: 1 }),
        None
    );
    // Cut inside a field (a varint, a string's bytes): no mode reads it.
    let mut cut = whole[..2].to_vec();
    cut.push(0x81);
    assert!(codec::decode::<Hello>(&cut, Compat::Record).is_err());
    assert!(codec::decode::<Hello>(&whole[..1], Compat::Record).is_err());
}

/// Regression (issue 22, item 8): a string whose length was the last byte
/// of a body (`01`, its byte missing) read as `"\0"` with the zero tail,
/// where §3 says a length larger than what is left is invalid; a strict
/// client written from the document disagreed.
#[test]
fn a_string_whose_bytes_are_all_missing_is_invalid_not_zeros() {
    for mode in [
        Compat::Exact,
        Compat::PeerNewer,
        Compat::PeerOlder,
        Compat::Record,
    ] {
        assert!(codec::decode::<String>(&[0x01], mode).is_err(), "{mode:?}");
        assert!(
            codec::decode::<Goodbye>(&[0x03, b'a'], mode).is_err(),
            "{mode:?}"
        );
    }
    // A whole missing string still reads as empty where the zero tail applies.
    let g: Goodbye = codec::decode(&[], Compat::PeerOlder).unwrap();
    assert_eq!(g.reason, "");
}
