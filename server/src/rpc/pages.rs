//! Splitting lists into frames.
//!
//! Records (VM entries, sources, changes) are encoded once each; a page body
//! is then assembled from the encoded records exactly as postcard would
//! encode the page type (a varint count, then each record as a byte string),
//! so sizes are known before a frame is built and nothing is encoded twice.
//! The tests check the assembled bodies against the typed encoding.

use std::ops::Range;

use serde::Serialize;
use vm_catalog_protocol::{
    Change, ChangeItem, DiagCode, Diagnostic, HEADER_LEN, Severity, VmEntry, codec,
};

/// Bytes kept free in every frame for the page's own fields (variant tag,
/// generation, counts, flags).
const PAGE_SLACK: usize = 32;

/// Room for the records of one page in a frame of `max_frame` bytes.
pub fn budget(max_frame: u32) -> usize {
    max_frame as usize - HEADER_LEN - PAGE_SLACK
}

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
fn record_len(r: &[u8]) -> usize {
    varint_len(r.len() as u64) + r.len()
}

/// Appends a list of records: a varint count, then each record as a byte string.
pub fn write_list(out: &mut Vec<u8>, records: &[Vec<u8>]) {
    write_varint(out, records.len() as u64);
    for r in records {
        write_varint(out, r.len() as u64);
        out.extend_from_slice(r);
    }
}

/// Splits records into consecutive runs whose list encoding fits `budget`.
/// Every run holds at least one record; [`encode_vm`] and
/// [`encode_change`] keep single records within the budget.
pub fn split(records: &[Vec<u8>], budget: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut size = 0;
    for (i, r) in records.iter().enumerate() {
        let len = record_len(r);
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

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding catalog types into a Vec cannot fail: they have no maps, no
    // sequences of unknown length and no custom serializers that error.
    codec::encode(value).expect("catalog types always encode")
}

/// Encodes a VM entry as a record of at most `budget` bytes, dropping
/// diagnostics beyond what fits (and saying so in a last diagnostic).
pub fn encode_vm(entry: &VmEntry, budget: usize) -> Vec<u8> {
    let bytes = encode(entry);
    if record_len(&bytes) <= budget {
        return bytes;
    }
    let mut trimmed = entry.clone();
    let total = entry.diagnostics.len();
    let mut keep = total;
    loop {
        keep /= 2;
        trimmed.diagnostics = entry.diagnostics[..keep].to_vec();
        trimmed.diagnostics.push(Diagnostic {
            code: DiagCode::TooManyEntries,
            severity: Severity::Warning,
            path: entry.path.clone(),
            message: format!("{} more diagnostics not shown", total - keep),
        });
        let bytes = encode(&trimmed);
        if record_len(&bytes) <= budget || keep == 0 {
            return bytes;
        }
    }
}

/// Encodes a change as a record of at most `budget` bytes (see [`encode_vm`]).
pub fn encode_change(change: &Change, budget: usize) -> Vec<u8> {
    let bytes = encode(change);
    if record_len(&bytes) <= budget {
        return bytes;
    }
    match &change.item {
        ChangeItem::Vm(entry) => {
            // The change's own fields cost a few bytes around the entry.
            let vm = encode_vm(entry, budget - PAGE_SLACK);
            let trimmed: VmEntry =
                codec::decode(&vm, codec::Compat::Exact).expect("an entry we just encoded decodes");
            encode(&Change {
                item: ChangeItem::Vm(trimmed),
                ..change.clone()
            })
        }
        ChangeItem::Source(_) => bytes,
    }
}

/// Encodes any record.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    encode(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_catalog_protocol::{ChangeKind, Event, VmPage, VmState};

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
    fn an_oversized_entry_is_trimmed_to_fit() {
        let big = entry("big", 2000);
        let bytes = encode_vm(&big, 16_000);
        assert!(record_len(&bytes) <= 16_000);
        let back: VmEntry = codec::decode(&bytes, codec::Compat::Exact).unwrap();
        let last = back.diagnostics.last().unwrap();
        assert!(
            last.message.ends_with("more diagnostics not shown"),
            "{last:?}"
        );
    }
}
