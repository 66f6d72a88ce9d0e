//! `docs/protocol.md` must cover every frame kind, method, error code and
//! diagnostic code the crate defines: adding one without documenting it fails.

use vm_catalog_protocol::*;

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
