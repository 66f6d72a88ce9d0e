//! `docs/protocol.md` must cover every frame kind, method, error code and
//! diagnostic code the crate defines: adding one without documenting it fails.

use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;

mod fixtures;

fn spec() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md");
    std::fs::read_to_string(path).expect("docs/protocol.md")
}

#[test]
fn every_method_is_documented_with_its_id() {
    let spec = spec();
    for m in Method::ALL {
        let row = format!("| {} | `{}` |", m.id(), m.name());
        assert!(
            spec.contains(&row),
            "docs/protocol.md lacks the row {row:?}"
        );
        assert!(
            spec.contains(&format!("### {}", m.name())),
            "no section for {}",
            m.name()
        );
    }
}

#[test]
fn every_frame_kind_is_documented_with_its_value() {
    let spec = spec();
    for v in 1..=255u8 {
        if let Some(k) = FrameKind::from_u8(v) {
            let row = format!("| {v} | `{k:?}` ");
            assert!(
                spec.contains(&row),
                "docs/protocol.md lacks the row {row:?}"
            );
        }
    }
}

#[test]
fn every_code_is_documented_with_its_number() {
    let spec = spec();
    for c in ErrorCode::ALL {
        let row = format!("| {} | `{}` |", c.number(), c.name());
        assert!(
            spec.contains(&row),
            "docs/protocol.md lacks the row {row:?}"
        );
    }
    for c in DiagCode::ALL {
        let row = format!("| {} | `{}` |", c.number(), c.name());
        assert!(
            spec.contains(&row),
            "docs/protocol.md lacks the row {row:?}"
        );
    }
}

#[test]
fn every_event_tag_is_documented_with_its_value() {
    let spec = spec();
    for t in EventTag::ALL {
        let tag = format!("{}({})", t.name(), t.value());
        assert!(
            spec.contains(&format!("Event = {tag} ")) || spec.contains(&format!("| {tag} ")),
            "docs/protocol.md lacks the event tag {tag:?}"
        );
    }
}

/// Regression (issue 12, item 9): §10 showed a cancelled subscription ending
/// with `Error Cancelled`; the daemon ends it with its `StreamEnd`
/// (`SubscriptionEnd`), as §5 and §7 say.
#[test]
fn the_session_example_ends_a_cancelled_subscription_with_its_stream_end() {
    let spec = spec();
    let session = spec.split("## 10. A session").nth(1).expect("§10");
    let after_cancel = session
        .split("Request  #3 Cancel { call_id: 2 }")
        .nth(1)
        .expect("the example cancels call 2");
    let example = after_cancel.split("```").next().unwrap();
    assert!(example.contains("End      #2 SubscriptionEnd"), "{example}");
    assert!(example.contains("Reply    #3 CancelReply { found: true }"));
    assert!(!example.contains("Cancelled"), "{example}");
}

/// Regression (issue 12, item 9): the document did not say whether a record
/// type that is a whole body (`RescanOutcome`, `Rescan`'s `StreamEnd`) is
/// length-prefixed. It is not; as a field (`Info.last_rescan`) it is.
#[test]
fn a_record_type_as_a_whole_body_is_not_length_prefixed() {
    let outcome = fixtures::rescan_outcome();
    let frame = message::end::<Rescan>(6, &outcome, DEFAULT_MAX_FRAME).unwrap();
    let f = decode_frame(&frame, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(
        f.body,
        codec::encode(&outcome).unwrap(),
        "its fields, nothing before"
    );
    let decoded: RescanOutcome = codec::decode(f.body, Compat::Exact).unwrap();
    assert_eq!(decoded, outcome);
    assert!(spec().contains("A record type that is a whole body is not length-prefixed"));
}

/// `docs/protocol.md` §3 states the varint limits: these are they.
#[test]
fn varint_limits_are_as_documented() {
    assert!(spec().contains("A `u16` takes at most 3 bytes, a `u32` 5, a `u64` 10"));
    let ok = |b: &[u8]| codec::decode::<u64>(b, Compat::Exact).is_ok();
    assert_eq!(
        codec::decode::<u16>(&[0xff, 0xff, 0x03], Compat::Exact),
        Ok(u16::MAX)
    );
    assert!(
        codec::decode::<u16>(&[0xff, 0xff, 0x04], Compat::Exact).is_err(),
        "too big"
    );
    assert!(
        codec::decode::<u16>(&[0x80, 0x80, 0x80, 0x00], Compat::Exact).is_err(),
        "4 bytes"
    );
    assert_eq!(
        codec::decode::<u32>(&[0xff, 0xff, 0xff, 0xff, 0x0f], Compat::Exact),
        Ok(u32::MAX)
    );
    assert!(codec::decode::<u32>(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], Compat::Exact).is_err());
    let mut max = vec![0xff; 9];
    max.push(0x01);
    assert!(ok(&max), "u64::MAX in 10 bytes");
    *max.last_mut().unwrap() = 0x02;
    assert!(!ok(&max), "over u64::MAX");
    let mut long = vec![0x80; 10];
    long.push(0x00);
    assert!(!ok(&long), "11 bytes");
    // Not the shortest form, within the limit: read.
    assert_eq!(codec::decode::<u16>(&[0x80, 0x00], Compat::Exact), Ok(0));
    // A length beyond the body.
    assert!(codec::decode::<String>(&[0x05, b'a'], Compat::Exact).is_err());
}
