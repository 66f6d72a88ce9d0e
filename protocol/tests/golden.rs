//! Golden wire bytes: every frame shape, encoded, must equal the bytes stored
//! in `tests/golden/<name>.hex`, and those bytes must decode back to the same
//! value.
//!
//! If one of these tests fails, you changed the wire format. That is almost
//! never what you want: read "Evolution rules" in `docs/protocol.md`. If the
//! change is an allowed evolution (a new variant, a trailing `Option`), add a
//! *new* golden file for the new shape and leave the old ones alone; old
//! bytes must keep decoding. Regenerate with `UPDATE_GOLDEN=1 cargo test -p
//! vm-catalog-protocol --test golden` only when you mean it, and say so in the
//! commit message. The same run refreshes the fuzz seeds in `fuzz/seeds/`.
//! When a trailing field changes a shape, its previous bytes move to
//! `tests/golden/older/`, and [`older_shapes_still_decode`] keeps them
//! decoding.

mod fixtures;

use std::fmt::Debug;
use std::path::PathBuf;

use serde::Serialize;
use serde::de::DeserializeOwned;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;

use fixtures::*;

const MAX: u32 = LIMIT_MAX_FRAME;

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn to_hex(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let line: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        out.push_str(&line.join(" "));
    }
    out.push('\n');
    out
}

fn from_hex(text: &str) -> Vec<u8> {
    text.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        .collect()
}

/// Checks one frame against its golden file, and that it decodes back.
fn check<T>(name: &str, kind: FrameKind, method: u16, call_id: u32, value: &T)
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let frame = encode_frame(kind, method, call_id, value, MAX).unwrap();
    let path = golden_dir().join(format!("{name}.hex"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, to_hex(&frame)).unwrap();
        let seeds = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/frame_decode");
        std::fs::create_dir_all(&seeds).unwrap();
        std::fs::write(seeds.join(name), &frame).unwrap();
    }
    let golden = from_hex(
        &std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 once)", path.display())),
    );
    assert_eq!(
        to_hex(&frame),
        to_hex(&golden),
        "{name}: the encoding changed; see the comment at the top of golden.rs"
    );
    let f = decode_frame(&golden, MAX).unwrap();
    assert_eq!(f.header.kind, kind);
    assert_eq!(f.header.method, method);
    assert_eq!(f.header.call_id, call_id);
    let back: T = codec::decode(f.body, Compat::Exact).unwrap();
    assert_eq!(&back, value, "{name}: golden bytes decode to another value");
}

#[test]
fn handshake_frames() {
    check(
        "hello",
        FrameKind::Hello,
        0,
        0,
        &Hello {
            client: "vm-catalog/0.1.0".into(),
            versions: VersionRange { min: 1, max: 1 },
            max_frame: 65536,
            features: Features::KNOWN,
        },
    );
    check(
        "welcome",
        FrameKind::Welcome,
        0,
        0,
        &Welcome {
            version: 1,
            server: "vm-catalogd 0.1.0".into(),
            epoch: cursor().epoch,
            max_frame: 65536,
            features: Features::APPLIER,
            supported: VersionRange { min: 1, max: 1 },
        },
    );
    let mut unsupported = ErrorBody::new(ErrorCode::UnsupportedVersion, "no common version");
    unsupported.supported = Some(VersionRange { min: 1, max: 1 });
    check(
        "error_unsupported_version",
        FrameKind::Error,
        0,
        0,
        &unsupported,
    );
    check(
        "goodbye",
        FrameKind::Goodbye,
        0,
        0,
        &Goodbye {
            reason: "shutting down".into(),
        },
    );
}

#[test]
fn request_frames() {
    check(
        "request_ping",
        FrameKind::Request,
        1,
        1,
        &Ping {
            payload: b"abc".to_vec(),
        },
    );
    check("request_get_info", FrameKind::Request, 2, 2, &GetInfo {});
    check(
        "request_list_vms",
        FrameKind::Request,
        3,
        3,
        &ListVms {
            include_inactive: true,
            source: Some(label("user")),
        },
    );
    check(
        "request_get_vm",
        FrameKind::Request,
        4,
        4,
        &GetVm {
            name: name("netvm"),
        },
    );
    check(
        "request_list_sources",
        FrameKind::Request,
        5,
        5,
        &ListSources {},
    );
    check(
        "request_rescan",
        FrameKind::Request,
        6,
        6,
        &Rescan { dry_run: true },
    );
    check(
        "request_subscribe",
        FrameKind::Request,
        7,
        7,
        &Subscribe {
            since: Some(cursor()),
        },
    );
    check(
        "request_cancel",
        FrameKind::Request,
        8,
        8,
        &Cancel { call_id: 7 },
    );
}

#[test]
fn reply_frames() {
    check(
        "reply_pong",
        FrameKind::Reply,
        1,
        1,
        &Pong {
            payload: b"abc".to_vec(),
        },
    );
    check("reply_info", FrameKind::Reply, 2, 2, &info());
    check(
        "reply_vm_detail",
        FrameKind::Reply,
        4,
        4,
        &VmDetail {
            cursor: cursor(),
            vm: vm_entry(),
            others: vec![shadowed_entry()],
        },
    );
    check(
        "reply_source_list",
        FrameKind::Reply,
        5,
        5,
        &SourceList {
            cursor: cursor(),
            sources: vec![source_entry()],
        },
    );
    check(
        "reply_cancel",
        FrameKind::Reply,
        8,
        8,
        &CancelReply { found: true },
    );
    let mut not_found = ErrorBody::new(ErrorCode::NotFound, "no VM named nosuch");
    not_found.max_frame = None;
    check("error_not_found", FrameKind::Error, 4, 4, &not_found);
    let mut too_large = ErrorBody::new(ErrorCode::FrameTooLarge, "frame too large");
    too_large.max_frame = Some(65536);
    check("error_frame_too_large", FrameKind::Error, 0, 0, &too_large);
}

#[test]
fn stream_frames() {
    check(
        "item_vm_page",
        FrameKind::StreamItem,
        3,
        3,
        &VmPage {
            vms: vec![vm_entry(), shadowed_entry()],
        },
    );
    check(
        "end_list",
        FrameKind::StreamEnd,
        3,
        3,
        &ListEnd {
            cursor: cursor(),
            total: 2,
        },
    );
    check(
        "item_change_page",
        FrameKind::StreamItem,
        6,
        6,
        &ChangePage {
            changes: vec![change()],
        },
    );
    check("end_rescan", FrameKind::StreamEnd, 6, 6, &rescan_outcome());
    check(
        "item_event_reset",
        FrameKind::StreamItem,
        7,
        7,
        &Event::Reset {
            cursor: cursor(),
            reason: ResetReason::Initial,
        },
    );
    check(
        "item_event_snapshot_page",
        FrameKind::StreamItem,
        7,
        7,
        &Event::SnapshotPage {
            vms: vec![vm_entry()],
            sources: vec![source_entry()],
        },
    );
    check(
        "item_event_resumed",
        FrameKind::StreamItem,
        7,
        7,
        &Event::Resumed { from: cursor() },
    );
    check(
        "item_event_synced",
        FrameKind::StreamItem,
        7,
        7,
        &Event::Synced { cursor: cursor() },
    );
    check(
        "item_event_batch",
        FrameKind::StreamItem,
        7,
        7,
        &Event::Batch {
            generation: 42,
            changes: batch_changes(),
            last: true,
        },
    );
    check(
        "end_subscription",
        FrameKind::StreamEnd,
        7,
        7,
        &SubscriptionEnd { cursor: cursor() },
    );
}

/// The changes of the golden `Batch`.
fn batch_changes() -> Vec<Change> {
    vec![
        change(),
        Change {
            generation: 42,
            kind: ChangeKind::StateChanged,
            item: ChangeItem::Source(source_entry()),
        },
    ]
}

/// The body of a golden frame.
fn golden_body(name: &str) -> Vec<u8> {
    let path = golden_dir().join(format!("{name}.hex"));
    let frame = from_hex(&std::fs::read_to_string(&path).unwrap());
    decode_frame(&frame, MAX).unwrap().body.to_vec()
}

/// Bodies assembled from records, as a server sends snapshots and batches,
/// are the golden bytes of the typed events; and each event's golden body
/// starts with its [`EventTag`].
#[test]
fn assembled_event_bodies_equal_the_golden_frames() {
    let mut page = Vec::new();
    records::write_snapshot_page(
        &mut page,
        &[records::encode_vm(&vm_entry(), RECORD_BUDGET)],
        &[records::encode_source(&source_entry(), RECORD_BUDGET)],
    );
    assert_eq!(
        to_hex(&page),
        to_hex(&golden_body("item_event_snapshot_page"))
    );
    let batch = records::batch_bodies(42, &batch_changes());
    assert_eq!(batch.len(), 1);
    assert_eq!(to_hex(&batch[0]), to_hex(&golden_body("item_event_batch")));
    for (name, tag) in [
        ("item_event_reset", EventTag::Reset),
        ("item_event_snapshot_page", EventTag::SnapshotPage),
        ("item_event_resumed", EventTag::Resumed),
        ("item_event_synced", EventTag::Synced),
        ("item_event_batch", EventTag::Batch),
    ] {
        assert_eq!(golden_body(name)[0], tag.value(), "{name}");
    }
}

/// An entry as a daemon that predates `fingerprint` and `id` sent it.
fn older_vm(e: VmEntry) -> VmEntry {
    VmEntry {
        fingerprint: None,
        id: None,
        ..e
    }
}

fn older_change(c: Change) -> Change {
    match c.item {
        ChangeItem::Vm(e) => Change {
            item: ChangeItem::Vm(older_vm(e)),
            ..c
        },
        ChangeItem::Source(_) => c,
    }
}

/// Bytes of `tests/golden/older/<name>.hex` (the shape before a trailing
/// field was added) still decode, exactly, to `value` with that field
/// empty.
fn decodes_as<T: DeserializeOwned + PartialEq + Debug>(name: &str, value: &T) {
    let path = golden_dir().join("older").join(format!("{name}.hex"));
    let frame = from_hex(&std::fs::read_to_string(&path).unwrap());
    let f = decode_frame(&frame, MAX).unwrap();
    let back: T = codec::decode(f.body, Compat::Exact).unwrap();
    assert_eq!(&back, value, "{name}: older bytes decode to another value");
}

/// Frames from before `VmEntry.fingerprint`, `VmEntry.id` and
/// `SourceSummary.diagnostics` were appended decode with those empty.
#[test]
fn older_shapes_still_decode() {
    let mut i = info();
    for s in &mut i.sources {
        s.diagnostics.clear();
    }
    decodes_as("reply_info", &i);
    decodes_as(
        "reply_vm_detail",
        &VmDetail {
            cursor: cursor(),
            vm: older_vm(vm_entry()),
            others: vec![older_vm(shadowed_entry())],
        },
    );
    decodes_as(
        "item_vm_page",
        &VmPage {
            vms: vec![older_vm(vm_entry()), older_vm(shadowed_entry())],
        },
    );
    decodes_as(
        "item_change_page",
        &ChangePage {
            changes: vec![older_change(change())],
        },
    );
    decodes_as(
        "item_event_snapshot_page",
        &Event::SnapshotPage {
            vms: vec![older_vm(vm_entry())],
            sources: vec![source_entry()],
        },
    );
    decodes_as(
        "item_event_batch",
        &Event::Batch {
            generation: 42,
            changes: batch_changes().into_iter().map(older_change).collect(),
            last: true,
        },
    );
}

/// The header layout is pinned byte by byte, independent of any body.
#[test]
fn header_layout() {
    let frame = encode_frame(FrameKind::Request, 0x0304, 0x0506_0708, &GetInfo {}, MAX).unwrap();
    assert_eq!(
        frame,
        [
            b'V', b'C', 1, 3, 0, 0, 0x04, 0x03, 0x08, 0x07, 0x06, 0x05, 0, 0, 0, 0
        ]
    );
}
