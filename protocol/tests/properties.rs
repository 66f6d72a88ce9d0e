//! Property tests: the decoders never panic on arbitrary or mutated input, and
//! every value round-trips.

mod fixtures;

use proptest::prelude::*;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;

const COMPATS: [Compat; 3] = [Compat::Exact, Compat::PeerOlder, Compat::PeerNewer];

/// Runs every decoder this crate has over one body.
fn decode_everything(method: u16, body: &[u8]) {
    for c in COMPATS {
        let _ = Request::decode(method, body, c);
        let _ = codec::decode::<Hello>(body, c);
        let _ = codec::decode::<Welcome>(body, c);
        let _ = codec::decode::<ErrorBody>(body, c);
        let _ = codec::decode::<Goodbye>(body, c);
        let _ = codec::decode::<Pong>(body, c);
        let _ = codec::decode::<Info>(body, c);
        let _ = codec::decode::<VmPage>(body, c);
        let _ = codec::decode::<ListEnd>(body, c);
        let _ = codec::decode::<VmDetail>(body, c);
        let _ = codec::decode::<SourceList>(body, c);
        let _ = codec::decode::<ChangePage>(body, c);
        let _ = codec::decode::<RescanOutcome>(body, c);
        let _ = codec::decode::<Event>(body, c);
        let _ = codec::decode::<SubscriptionEnd>(body, c);
        let _ = codec::decode::<CancelReply>(body, c);
    }
}

fn vm_name() -> impl Strategy<Value = VmName> {
    "[a-zA-Z0-9][a-zA-Z0-9._-]{0,63}".prop_filter_map("reserved", |s| VmName::try_from(s).ok())
}

fn source_label() -> impl Strategy<Value = SourceLabel> {
    "[a-z0-9][a-z0-9-]{0,40}".prop_map(|s| SourceLabel::try_from(s).unwrap())
}

/// Any string, cheaply (regex strategies are slow in debug builds).
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

fn diagnostic() -> impl Strategy<Value = Diagnostic> {
    (any::<u16>(), any::<bool>(), text(40), text(40)).prop_map(|(c, e, path, message)| Diagnostic {
        code: DiagCode::from_number(c),
        severity: if e {
            Severity::Error
        } else {
            Severity::Warning
        },
        path,
        message,
    })
}

fn vm_state() -> impl Strategy<Value = VmState> {
    prop_oneof![
        Just(VmState::Active),
        Just(VmState::Shadowed),
        Just(VmState::Rejected),
        Just(VmState::Unavailable)
    ]
}

prop_compose! {
    fn vm_entry()(
        name in vm_name(),
        source in source_label(),
        state in vm_state(),
        path in text(60),
        view in proptest::option::of(text(60)),
        service in proptest::option::of("[a-z-]{1,20}"),
        providers in proptest::collection::vec(vm_name(), 0..4),
        diagnostics in proptest::collection::vec(diagnostic(), 0..4),
        restart_pending in any::<bool>(),
        shadowed_by in proptest::option::of(source_label()),
        revision in any::<u64>(),
        fingerprint in proptest::option::of(any::<u64>()),
        id in proptest::option::of("[a-zA-Z0-9]{1,32}"),
    ) -> VmEntry {
        VmEntry {
            name, source, state, path, view, service,
            providers: providers.into_iter().map(|name| Provider { kind: ProviderKind::Net, name }).collect(),
            diagnostics, restart_pending, shadowed_by, revision,
            fingerprint, id: id.map(|i| i.parse().unwrap()),
        }
    }
}

fn cursor() -> impl Strategy<Value = Cursor> {
    (any::<u64>(), any::<u64>()).prop_map(|(e, g)| Cursor {
        epoch: Epoch(e),
        generation: g,
    })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200)
            .prop_map(|payload| Request::Ping(Ping { payload })),
        Just(Request::GetInfo(GetInfo {})),
        (any::<bool>(), proptest::option::of(source_label())).prop_map(
            |(include_inactive, source)| {
                Request::ListVms(ListVms {
                    include_inactive,
                    source,
                })
            }
        ),
        vm_name().prop_map(|name| Request::GetVm(GetVm { name })),
        Just(Request::ListSources(ListSources {})),
        any::<bool>().prop_map(|dry_run| Request::Rescan(Rescan { dry_run })),
        proptest::option::of(cursor()).prop_map(|since| Request::Subscribe(Subscribe { since })),
        any::<u32>().prop_map(|call_id| Request::Cancel(Cancel { call_id })),
    ]
}

fn encode_request(call_id: u32, r: &Request) -> Vec<u8> {
    match r {
        Request::Ping(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::GetInfo(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::ListVms(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::GetVm(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::ListSources(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::Rescan(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::Subscribe(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
        Request::Cancel(p) => message::request(call_id, p, LIMIT_MAX_FRAME),
    }
    .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(f) = decode_frame(&data, LIMIT_MAX_FRAME) {
            decode_everything(f.header.method, f.body);
        }
        // The body decoders on their own, too.
        decode_everything(u16::from(data.first().copied().unwrap_or(0)), &data);
    }

    #[test]
    fn arbitrary_bodies_behind_a_valid_header_never_panic(
        kind in 1u8..=8, method in 0u16..10, call_id in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut frame = vec![b'V', b'C', 1, kind, 0, 0];
        frame.extend_from_slice(&method.to_le_bytes());
        frame.extend_from_slice(&call_id.to_le_bytes());
        frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
        frame.extend_from_slice(&body);
        let f = decode_frame(&frame, LIMIT_MAX_FRAME).unwrap();
        prop_assert_eq!(f.body, &body[..]);
        decode_everything(method, f.body);
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn mutated_valid_frames_never_panic(
        entries in proptest::collection::vec(vm_entry(), 0..6),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let mut frame = message::item::<ListVms>(9, &VmPage { vms: entries }, LIMIT_MAX_FRAME).unwrap();
        for (at, byte) in flips {
            let i = at % frame.len();
            frame[i] ^= byte;
        }
        frame.truncate(cut % (frame.len() + 1));
        if let Ok(f) = decode_frame(&frame, LIMIT_MAX_FRAME) {
            decode_everything(f.header.method, f.body);
        }
    }

    #[test]
    fn requests_round_trip(call_id in any::<u32>(), r in request()) {
        let frame = encode_request(call_id, &r);
        let f = decode_frame(&frame, LIMIT_MAX_FRAME).unwrap();
        prop_assert_eq!(f.header.kind, FrameKind::Request);
        prop_assert_eq!(f.header.call_id, call_id);
        prop_assert_eq!(f.header.method, r.method().id());
        let back = Request::decode(f.header.method, f.body, Compat::Exact).unwrap();
        prop_assert_eq!(back, r);
    }

    #[test]
    fn pages_round_trip(entries in proptest::collection::vec(vm_entry(), 0..20)) {
        let page = VmPage { vms: entries };
        let frame = message::item::<ListVms>(3, &page, LIMIT_MAX_FRAME).unwrap();
        let f = decode_frame(&frame, LIMIT_MAX_FRAME).unwrap();
        let back: VmPage = codec::decode(f.body, Compat::Exact).unwrap();
        prop_assert_eq!(back, page);
    }

    #[test]
    fn events_round_trip(entries in proptest::collection::vec(vm_entry(), 0..6), c in cursor(), last in any::<bool>()) {
        let changes: Vec<Change> = entries.iter().cloned().map(|e| Change {
            generation: c.generation, kind: ChangeKind::Changed, item: ChangeItem::Vm(e),
        }).collect();
        for ev in [
            Event::Reset { cursor: c, reason: ResetReason::Lagged },
            Event::SnapshotPage { vms: entries.clone(), sources: vec![fixtures::source_entry()] },
            Event::Resumed { from: c },
            Event::Synced { cursor: c },
            Event::Batch { generation: c.generation, changes, last },
        ] {
            let b = codec::encode(&ev).unwrap();
            prop_assert_eq!(codec::decode::<Event>(&b, Compat::Exact).unwrap(), ev);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A page spliced from records encoded one by one is byte for byte the
    /// ordinary encoding of the page: postcard writes a list as a varint
    /// count, then each element, and each element here is a record (a
    /// byte string of the entry's own encoding). So a server may keep every
    /// entry's record from when it changed and put pages together from
    /// them. Checked for whole lists, for pages chosen by a filter and a
    /// budget, and for the event bodies assembled the same way.
    #[test]
    fn pages_spliced_from_records_equal_the_ordinary_encoding(
        entries in proptest::collection::vec(vm_entry(), 0..24),
        keep_mask in any::<u32>(),
        budget in 200usize..4000,
        generation in any::<u64>(),
        last in any::<bool>(),
    ) {
        use vm_catalog_protocol::records::{self, RECORD_BUDGET};
        let records: Vec<Vec<u8>> = entries.iter().map(|e| records::encode_vm(e, RECORD_BUDGET)).collect();
        let fitted: Vec<VmEntry> = entries.iter().map(|e| records::fit_vm(e, RECORD_BUDGET).into_owned()).collect();

        let mut body = Vec::new();
        records::write_list(&mut body, &records);
        prop_assert_eq!(body.len(), records::list_len(&records));
        prop_assert_eq!(&body, &codec::encode(&VmPage { vms: fitted.clone() }).unwrap());

        let keep = |i: usize| keep_mask & (1 << (i % 32)) != 0;
        let mut from = 0;
        let mut seen = Vec::new();
        while let Some(page) = records::next_page(&records, from, budget, keep) {
            let mut body = Vec::new();
            page.write_list(&mut body, &records, keep);
            prop_assert_eq!(body.len(), page.list_len());
            let kept: Vec<VmEntry> = (page.start..page.end).filter(|&i| keep(i)).map(|i| fitted[i].clone()).collect();
            prop_assert!(page.count == 1 || body.len() <= budget + 5);
            prop_assert_eq!(&body, &codec::encode(&VmPage { vms: kept.clone() }).unwrap());
            seen.extend(kept);
            from = page.end;
        }
        let wanted: Vec<VmEntry> = (0..fitted.len()).filter(|&i| keep(i)).map(|i| fitted[i].clone()).collect();
        prop_assert_eq!(seen, wanted);

        if let Some((first, others)) = records.split_first() {
            let cursor = Cursor { epoch: Epoch(generation ^ 0x5a5a), generation };
            let mut body = Vec::new();
            records::write_detail(&mut body, cursor, first, others);
            prop_assert_eq!(body.len(), records::detail_len(cursor, first, others));
            let typed = VmDetail { cursor, vm: fitted[0].clone(), others: fitted[1..].to_vec() };
            prop_assert_eq!(&body, &codec::encode(&typed).unwrap());
        }

        let source = fixtures::source_entry();
        let sources = [records::encode_source(&source, RECORD_BUDGET)];
        let mut body = Vec::new();
        records::write_snapshot_page(&mut body, &records, &sources);
        let typed = Event::SnapshotPage { vms: fitted.clone(), sources: vec![source] };
        prop_assert_eq!(&body, &codec::encode(&typed).unwrap());

        let changes: Vec<Change> = fitted.iter().cloned().map(|e| Change {
            generation, kind: ChangeKind::Changed, item: ChangeItem::Vm(e),
        }).collect();
        let change_records: Vec<Vec<u8>> = changes.iter().map(|c| records::encode_change(c, RECORD_BUDGET)).collect();
        let mut body = Vec::new();
        records::write_batch(&mut body, generation, &change_records, last);
        let typed = Event::Batch { generation, changes, last };
        prop_assert_eq!(&body, &codec::encode(&typed).unwrap());
    }
}
