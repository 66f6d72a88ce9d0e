//! Splitting lists into frames.
//!
//! Every record (a VM entry, a source, a change) is trimmed to fit in the
//! smallest frame any peer may negotiate ([`RECORD_BUDGET`]): diagnostics
//! first, then providers, with a `truncated` diagnostic saying how many are
//! not shown. So a record encoded once fits every connection, and the
//! records of one generation are encoded once and shared by every call
//! ([`crate::hub::Published::records`]).
//!
//! A page body is assembled from encoded records exactly as postcard would
//! encode the page type (a varint count, then each record as a byte
//! string), so sizes are known before a frame is built and nothing is
//! encoded twice. The tests check the assembled bodies against the typed
//! encoding.

use std::borrow::Cow;
use std::ops::Range;

use serde::Serialize;
use vm_catalog_protocol::{
    Change, ChangeItem, DiagCode, Diagnostic, HEADER_LEN, MIN_MAX_FRAME, Severity, SourceEntry,
    VmEntry, codec,
};

/// Bytes kept free in every frame for the page's own fields (variant tag,
/// generation, counts, flags).
const PAGE_SLACK: usize = 32;

/// Room for the records of one page in a frame of `max_frame` bytes.
pub fn budget(max_frame: u32) -> usize {
    max_frame as usize - HEADER_LEN - PAGE_SLACK
}

/// The most one record may take, in a list, in any frame: records are
/// trimmed to it.
pub const RECORD_BUDGET: usize = MIN_MAX_FRAME as usize - HEADER_LEN - 2 * PAGE_SLACK;

/// Appends `v` as a postcard (LEB128) varint.
pub fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    (64 - v.max(1).leading_zeros() as usize).div_ceil(7)
}

/// The encoded size of one record inside a list.
pub fn record_len(r: &[u8]) -> usize {
    varint_len(r.len() as u64) + r.len()
}

/// Appends a list of records: a varint count, then each record as a byte string.
pub fn write_list<R: AsRef<[u8]>>(out: &mut Vec<u8>, records: &[R]) {
    write_varint(out, records.len() as u64);
    for r in records {
        let r = r.as_ref();
        write_varint(out, r.len() as u64);
        out.extend_from_slice(r);
    }
}

/// Splits records into consecutive runs whose list encoding fits `budget`.
/// Every run holds at least one record (each record fits on its own: see
/// [`RECORD_BUDGET`]).
pub fn split<R: AsRef<[u8]>>(records: &[R], budget: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, r) in records.iter().enumerate() {
        let len = record_len(r.as_ref());
        if i > start && size + len > budget {
            runs.push(start..i);
            start = i;
            size = 0;
        }
        size += len;
    }
    if start < records.len() {
        runs.push(start..records.len());
    }
    runs
}

/// Encodes a catalog value. It cannot fail: catalog types have no maps, no
/// sequences of unknown length and no serializers that error.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("catalog types always encode")
}

/// Keeps the first items of `list` such that `fits` holds, halving; returns
/// how many were dropped.
fn trim<T: Clone, E>(
    list: &mut Vec<T>,
    mut fits: impl FnMut(&[T]) -> Option<E>,
) -> (usize, Option<E>) {
    let all = std::mem::take(list);
    let mut keep = all.len();
    loop {
        if let Some(done) = fits(&all[..keep]) {
            *list = all[..keep].to_vec();
            return (all.len() - keep, Some(done));
        }
        if keep == 0 {
            *list = Vec::new();
            return (all.len(), None);
        }
        keep /= 2;
    }
}

fn truncated(path: &str, what: String) -> Diagnostic {
    Diagnostic {
        code: DiagCode::Truncated,
        severity: Severity::Warning,
        path: path.to_owned(),
        message: format!("{what} not shown: they do not fit in one frame"),
    }
}

/// The VM entry, trimmed to encode in at most `budget` bytes as a record:
/// diagnostics are dropped first, then providers, and a `truncated`
/// diagnostic says how many.
pub fn fit_vm(entry: &VmEntry, budget: usize) -> Cow<'_, VmEntry> {
    if record_len(&encode_record(entry)) <= budget {
        return Cow::Borrowed(entry);
    }
    let mut e = entry.clone();
    let path = entry.path.clone();
    let fits = |e: &VmEntry| record_len(&encode_record(e)) <= budget;
    let mut diags = e.diagnostics.clone();
    let (dropped, ok) = trim(&mut diags, |kept| {
        let mut t = e.clone();
        t.diagnostics = kept.to_vec();
        t.diagnostics.push(truncated(
            &path,
            format!("{} more diagnostics", entry.diagnostics.len() - kept.len()),
        ));
        fits(&t).then_some(())
    });
    e.diagnostics = diags;
    if ok.is_some() {
        e.diagnostics
            .push(truncated(&path, format!("{dropped} more diagnostics")));
        return Cow::Owned(e);
    }
    let mut providers = e.providers.clone();
    let (gone, _) = trim(&mut providers, |kept| {
        let mut t = e.clone();
        t.providers = kept.to_vec();
        t.diagnostics = vec![truncated(
            &path,
            format!(
                "{dropped} diagnostics and {} providers",
                entry.providers.len() - kept.len()
            ),
        )];
        fits(&t).then_some(())
    });
    e.providers = providers;
    e.diagnostics = vec![truncated(
        &path,
        format!("{dropped} diagnostics and {gone} providers"),
    )];
    Cow::Owned(e)
}

/// The source, trimmed like [`fit_vm`] (diagnostics only).
pub fn fit_source(entry: &SourceEntry, budget: usize) -> Cow<'_, SourceEntry> {
    if record_len(&encode_record(entry)) <= budget {
        return Cow::Borrowed(entry);
    }
    let mut e = entry.clone();
    let mut diags = e.diagnostics.clone();
    let (dropped, _) = trim(&mut diags, |kept| {
        let mut t = e.clone();
        t.diagnostics = kept.to_vec();
        t.diagnostics.push(truncated(
            &e.path,
            format!("{} more diagnostics", entry.diagnostics.len() - kept.len()),
        ));
        (record_len(&encode_record(&t)) <= budget).then_some(())
    });
    e.diagnostics = diags;
    let path = e.path.clone();
    e.diagnostics
        .push(truncated(&path, format!("{dropped} more diagnostics")));
    Cow::Owned(e)
}

/// Encodes a VM entry as a record of at most `budget` bytes.
pub fn encode_vm(entry: &VmEntry, budget: usize) -> Vec<u8> {
    encode_record(fit_vm(entry, budget).as_ref())
}

/// Encodes a source as a record of at most `budget` bytes.
pub fn encode_source(entry: &SourceEntry, budget: usize) -> Vec<u8> {
    encode_record(fit_source(entry, budget).as_ref())
}

/// Encodes a change as a record of at most `budget` bytes (its entry
/// trimmed as in [`fit_vm`] and [`fit_source`]).
pub fn encode_change(change: &Change, budget: usize) -> Vec<u8> {
    let bytes = encode_record(change);
    if record_len(&bytes) <= budget {
        return bytes;
    }
    // The change's own fields cost a few bytes around the entry.
    let inner = budget - PAGE_SLACK;
    let item = match &change.item {
        ChangeItem::Vm(e) => ChangeItem::Vm(fit_vm(e, inner).into_owned()),
        ChangeItem::Source(s) => ChangeItem::Source(fit_source(s, inner).into_owned()),
    };
    encode_record(&Change {
        item,
        ..change.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_catalog_protocol::{
        ChangeKind, Event, Provider, ProviderKind, SourceKind, SourceState, Trust, VmPage, VmState,
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

    #[test]
    fn assembled_pages_equal_the_typed_encoding() {
        let vms: Vec<_> = (0..5).map(|i| entry(&format!("vm{i}"), i)).collect();
        let records: Vec<_> = vms.iter().map(|e| encode_vm(e, 1 << 20)).collect();
        let mut body = Vec::new();
        write_list(&mut body, &records);
        assert_eq!(body, codec::encode(&VmPage { vms: vms.clone() }).unwrap());

        let changes: Vec<_> = vms
            .iter()
            .map(|e| Change {
                generation: 3,
                kind: ChangeKind::Added,
                item: ChangeItem::Vm(e.clone()),
            })
            .collect();
        let records: Vec<_> = changes.iter().map(|c| encode_change(c, 1 << 20)).collect();
        let mut body = Vec::new();
        write_varint(&mut body, 4); // Event::Batch
        write_varint(&mut body, 3);
        write_list(&mut body, &records);
        body.push(1);
        assert_eq!(
            body,
            codec::encode(&Event::Batch {
                generation: 3,
                changes,
                last: true
            })
            .unwrap()
        );
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
}
