//! Assembled bodies against the typed encoding; trimming; splitting.

use super::*;
use crate::calls::{ResetReason, VmPage};
use crate::catalog::{
    ChangeKind, Cursor, Epoch, Provider, ProviderKind, SourceKind, SourceState, Trust, VmState,
};

fn entry(name: &str, diags: usize) -> VmEntry {
    VmEntry {
        name: name.parse().unwrap(),
        source: "builtin".parse().unwrap(),
        state: VmState::Active,
        path: format!("/usr/img/builtin/{name}"),
        view: None,
        service: None,
        providers: vec![],
        diagnostics: (0..diags)
            .map(|i| Diagnostic {
                code: DiagCode::UnknownEntry,
                severity: Severity::Warning,
                path: format!("/usr/img/builtin/{name}/junk-{i:04}"),
                message: "unknown entry".into(),
            })
            .collect(),
        restart_pending: false,
        shadowed_by: None,
        revision: 1,
        fingerprint: None,
        id: None,
    }
}

fn source(diags: usize) -> SourceEntry {
    SourceEntry {
        label: "user".parse().unwrap(),
        kind: SourceKind::Directory,
        trust: Trust::Untrusted,
        path: "/srv/user".into(),
        device: None,
        partuuid: None,
        state: SourceState::Ready,
        read_only: false,
        precedence: 1,
        definitions: 0,
        diagnostics: entry("x", diags).diagnostics,
        revision: 1,
    }
}

fn added(generation: u64, e: &VmEntry) -> Change {
    Change {
        generation,
        kind: ChangeKind::Added,
        item: ChangeItem::Vm(e.clone()),
    }
}

#[test]
fn varints_match_postcard() {
    for v in [
        0u64,
        1,
        127,
        128,
        300,
        16_383,
        16_384,
        u32::MAX as u64,
        u64::MAX,
    ] {
        let mut ours = Vec::new();
        write_varint(&mut ours, v);
        assert_eq!(ours, codec::encode(&v).unwrap(), "{v}");
        assert_eq!(varint_len(v), ours.len(), "{v}");
    }
}

/// The tags are the variant indices postcard writes: every variant, encoded,
/// starts with its own tag.
#[test]
fn event_tags_are_the_encoded_variant_indices() {
    let cursor = Cursor {
        epoch: Epoch(1),
        generation: 2,
    };
    let events = [
        Event::Reset {
            cursor,
            reason: ResetReason::Initial,
        },
        Event::SnapshotPage {
            vms: vec![],
            sources: vec![],
        },
        Event::Resumed { from: cursor },
        Event::Synced { cursor },
        Event::Batch {
            generation: 2,
            changes: vec![],
            last: true,
        },
    ];
    let tags: Vec<EventTag> = events.iter().map(Event::tag).collect();
    assert_eq!(tags, EventTag::ALL, "one event per tag, in wire order");
    for (i, e) in events.iter().enumerate() {
        assert_eq!(usize::from(e.tag().value()), i, "{e:?}");
        assert_eq!(codec::encode(e).unwrap()[0], e.tag().value(), "{e:?}");
    }
}

#[test]
fn assembled_pages_equal_the_typed_encoding() {
    let vms: Vec<_> = (0..5).map(|i| entry(&format!("vm{i}"), i)).collect();
    let records: Vec<_> = vms.iter().map(|e| encode_vm(e, 1 << 20)).collect();
    let mut body = Vec::new();
    write_list(&mut body, &records);
    assert_eq!(body, codec::encode(&VmPage { vms: vms.clone() }).unwrap());

    let sources = [source(2), source(0)];
    let source_records: Vec<_> = sources.iter().map(|s| encode_source(s, 1 << 20)).collect();
    let mut body = Vec::new();
    write_snapshot_page(&mut body, &records, &source_records);
    assert_eq!(
        body,
        codec::encode(&Event::SnapshotPage {
            vms: vms.clone(),
            sources: sources.to_vec(),
        })
        .unwrap()
    );

    let changes: Vec<_> = vms.iter().map(|e| added(3, e)).collect();
    let records: Vec<_> = changes.iter().map(|c| encode_change(c, 1 << 20)).collect();
    let mut body = Vec::new();
    write_batch(&mut body, 3, &records, true);
    let typed = Event::Batch {
        generation: 3,
        changes: changes.clone(),
        last: true,
    };
    assert_eq!(body, codec::encode(&typed).unwrap());
    assert_eq!(batch_bodies(3, &changes), [body]);
}

/// A generation too large for the smallest frame comes in parts, each a
/// valid `Batch`, only the last one marked, together every change in order.
#[test]
fn a_large_batch_is_split_into_parts_that_fit_any_frame() {
    let changes: Vec<_> = (0..400)
        .map(|i| added(9, &entry(&format!("vm{i:04}"), 3)))
        .collect();
    let bodies = batch_bodies(9, &changes);
    assert!(bodies.len() > 1, "{} parts", bodies.len());
    let mut back = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        assert!(HEADER_LEN + body.len() <= MIN_MAX_FRAME as usize);
        match codec::decode::<Event>(body, codec::Compat::Exact).unwrap() {
            Event::Batch {
                generation: 9,
                changes,
                last,
            } => {
                assert_eq!(last, i + 1 == bodies.len());
                back.extend(changes);
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(back, changes);
}

#[test]
fn split_respects_the_budget_and_keeps_everything() {
    let records: Vec<Vec<u8>> = (0..100).map(|i| vec![0u8; 10 + i]).collect();
    let runs = split(&records, 500);
    assert_eq!(runs.first().unwrap().start, 0);
    assert_eq!(runs.last().unwrap().end, 100);
    for w in runs.windows(2) {
        assert_eq!(w[0].end, w[1].start);
    }
    for r in &runs {
        let size: usize = records[r.clone()].iter().map(|x| record_len(x)).sum();
        assert!(size <= 500 || r.len() == 1);
    }
}

#[test]
fn an_entry_that_fits_is_untouched() {
    let e = entry("small", 3);
    assert!(matches!(fit_vm(&e, RECORD_BUDGET), Cow::Borrowed(_)));
}

/// Regression (review): entries with thousands of diagnostics, sources
/// with thousands of hidden-entry warnings, and VMs with a thousand
/// providers made GetVm, ListSources, ListVms and every subscription
/// fail with "cannot encode the reply".
#[test]
fn oversized_records_are_trimmed_to_the_record_budget() {
    let big = entry("big", 2000);
    let bytes = encode_vm(&big, RECORD_BUDGET);
    assert!(record_len(&bytes) <= RECORD_BUDGET);
    let back: VmEntry = codec::decode(&bytes, codec::Compat::Exact).unwrap();
    let last = back.diagnostics.last().unwrap();
    assert_eq!(last.code, DiagCode::Truncated);
    assert_eq!(
        last.message,
        format!(
            "{} more diagnostics not shown: they do not fit in one frame",
            2000 - (back.diagnostics.len() - 1)
        )
    );

    let mut providers = entry("providers", 0);
    providers.providers = (0..1024)
        .map(|i| Provider {
            kind: ProviderKind::Net,
            name: format!("{i:0>60}").parse().unwrap(),
        })
        .collect();
    let bytes = encode_vm(&providers, RECORD_BUDGET);
    assert!(record_len(&bytes) <= RECORD_BUDGET);
    let back: VmEntry = codec::decode(&bytes, codec::Compat::Exact).unwrap();
    assert!(back.providers.len() < 1024);
    assert_eq!(back.diagnostics[0].code, DiagCode::Truncated);
    assert!(
        back.diagnostics[0].message.contains("providers"),
        "{:?}",
        back.diagnostics
    );

    let s = source(4096);
    let bytes = encode_source(&s, RECORD_BUDGET);
    assert!(record_len(&bytes) <= RECORD_BUDGET);
    let back: SourceEntry = codec::decode(&bytes, codec::Compat::Exact).unwrap();
    assert_eq!(back.diagnostics.last().unwrap().code, DiagCode::Truncated);

    let c = Change {
        generation: 1,
        kind: ChangeKind::Changed,
        item: ChangeItem::Source(s),
    };
    assert!(record_len(&encode_change(&c, RECORD_BUDGET)) <= RECORD_BUDGET);
}

/// Regression: one error (no kernel) among hundreds of
/// unknown-entry warnings was trimmed away, and the rejected definition
/// showed only warnings and `truncated`.
#[test]
fn trimming_keeps_the_errors_that_come_after_hundreds_of_warnings() {
    let mut e = entry("nokernel", 600);
    e.state = VmState::Rejected;
    let no_kernel = Diagnostic {
        code: DiagCode::MissingKernel,
        severity: Severity::Error,
        path: "/usr/img/builtin/nokernel/vmlinux".into(),
        message: "no kernel (vmlinux)".into(),
    };
    e.diagnostics.push(no_kernel.clone());
    let back: VmEntry = codec::decode(&encode_vm(&e, RECORD_BUDGET), codec::Compat::Exact).unwrap();
    assert_eq!(back.diagnostics[0], no_kernel, "the error first");
    assert!(
        back.diagnostics[1..back.diagnostics.len() - 1]
            .iter()
            .all(|d| d.code == DiagCode::UnknownEntry)
    );
    assert_eq!(back.diagnostics.last().unwrap().code, DiagCode::Truncated);
    // The warnings kept are the first ones, in their order.
    assert_eq!(back.diagnostics[1], e.diagnostics[0]);

    let mut s = source(600);
    s.diagnostics.push(no_kernel.clone());
    let back: SourceEntry =
        codec::decode(&encode_source(&s, RECORD_BUDGET), codec::Compat::Exact).unwrap();
    assert_eq!(back.diagnostics[0], no_kernel);
}

/// Trimming keeps as many diagnostics as fit, not the last power of two
/// that did (the trim halved until it fitted).
#[test]
fn trimming_keeps_as_many_diagnostics_as_fit() {
    let e = entry("big", 600);
    let back: VmEntry = codec::decode(&encode_vm(&e, RECORD_BUDGET), codec::Compat::Exact).unwrap();
    let kept = back.diagnostics.len() - 1;
    let mut one_more = back.clone();
    one_more
        .diagnostics
        .insert(kept, e.diagnostics[kept].clone());
    assert!(
        record_len(&encode_record(&one_more)) > RECORD_BUDGET,
        "{kept} kept, one more would have fitted"
    );
}

#[test]
fn pages_of_a_filtered_slice_keep_only_what_the_filter_keeps_and_fit() {
    let records: Vec<Vec<u8>> = (0..300).map(|i| vec![i as u8; 10 + i % 50]).collect();
    let keep = |i: usize| i % 3 != 0;
    let mut from = 0;
    let mut seen = Vec::new();
    while let Some(page) = next_page(&records, from, 400, keep) {
        assert!(keep(page.start));
        let mut out = Vec::new();
        page.write_list(&mut out, &records, keep);
        assert_eq!(out.len(), page.list_len());
        let chosen: Vec<&Vec<u8>> = (page.start..page.end)
            .filter(|&i| keep(i))
            .map(|i| &records[i])
            .collect();
        let mut listed = Vec::new();
        write_list(&mut listed, &chosen);
        assert_eq!((listed.len(), &listed), (list_len(&chosen), &out));
        let list: Vec<serde_bytes::ByteBuf> = codec::decode(&out, codec::Compat::Exact).unwrap();
        assert_eq!(list.len(), page.count);
        assert!(out.len() <= 400 + 2 || page.count == 1);
        seen.extend(list.into_iter().map(|b| b.into_vec()));
        from = page.end;
    }
    let expected: Vec<Vec<u8>> = (0..300)
        .filter(|&i| keep(i))
        .map(|i| records[i].clone())
        .collect();
    assert_eq!(seen, expected);
    assert_eq!(next_page(&records, 0, 400, |_| false), None);
}

#[test]
fn snapshot_pages_written_from_a_page_equal_the_assembled_ones() {
    let records: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; 30]).collect();
    let none: &[Vec<u8>] = &[];
    let page = next_page(&records, 0, 500, |_| true).unwrap();
    let run = &records[page.start..page.end];
    for (list, vms, sources) in [
        (SnapshotList::Vms, run, none),
        (SnapshotList::Sources, none, run),
    ] {
        let mut expected = Vec::new();
        write_snapshot_page(&mut expected, vms, sources);
        let mut got = Vec::new();
        page.write_snapshot(&mut got, &records, list);
        assert_eq!(got, expected, "{list:?}");
        assert_eq!(page.snapshot_len(), got.len());
    }
}
