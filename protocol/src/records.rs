//! Records, pages and event bodies assembled from records.
//!
//! Every record (a VM entry, a source, a change) is trimmed to fit in the
//! smallest frame any peer may negotiate ([`RECORD_BUDGET`]): diagnostics
//! first, then providers, with a `truncated` diagnostic saying how many are
//! not shown. So a record encoded once fits every connection, and a server
//! can encode the records of one catalog generation once and share the bytes
//! with every call.
//!
//! A page body is assembled from encoded records exactly as postcard would
//! encode the page type (a varint count, then each record as a byte string;
//! an [`Event`] starts with its [`EventTag`]), so sizes are known before a
//! frame is built and nothing is encoded twice. The tests (and the golden
//! tests) check the assembled bodies against the typed encoding.

use std::borrow::Cow;
use std::ops::Range;

use serde::Serialize;

use crate::calls::Event;
use crate::catalog::{Change, ChangeItem, Cursor, Diagnostic, Severity, SourceEntry, VmEntry};
use crate::code::DiagCode;
use crate::codec;
use crate::frame::{HEADER_LEN, MIN_MAX_FRAME};

/// The wire tag of each [`Event`] variant: postcard writes an enum as the
/// variant's index (a varint), then its fields. Bodies assembled from records
/// start with one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventTag {
    /// [`Event::Reset`].
    Reset = 0,
    /// [`Event::SnapshotPage`].
    SnapshotPage = 1,
    /// [`Event::Resumed`].
    Resumed = 2,
    /// [`Event::Synced`].
    Synced = 3,
    /// [`Event::Batch`].
    Batch = 4,
}

impl EventTag {
    /// Every tag, in wire order.
    pub const ALL: [EventTag; 5] = [
        EventTag::Reset,
        EventTag::SnapshotPage,
        EventTag::Resumed,
        EventTag::Synced,
        EventTag::Batch,
    ];

    /// The tag's value on the wire.
    pub fn value(self) -> u8 {
        self as u8
    }

    /// The variant's name, as in `docs/protocol.md`.
    pub fn name(self) -> &'static str {
        match self {
            EventTag::Reset => "Reset",
            EventTag::SnapshotPage => "SnapshotPage",
            EventTag::Resumed => "Resumed",
            EventTag::Synced => "Synced",
            EventTag::Batch => "Batch",
        }
    }
}

impl Event {
    /// The variant's wire tag. One exhaustive match: a new variant must
    /// choose its tag, and a test checks it against the encoding.
    pub fn tag(&self) -> EventTag {
        match self {
            Event::Reset { .. } => EventTag::Reset,
            Event::SnapshotPage { .. } => EventTag::SnapshotPage,
            Event::Resumed { .. } => EventTag::Resumed,
            Event::Synced { .. } => EventTag::Synced,
            Event::Batch { .. } => EventTag::Batch,
        }
    }
}

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

/// Appends a list of records: a varint count, then each record as a byte
/// string. A list alone is the body of a `VmPage` or a `ChangePage`.
pub fn write_list<R: AsRef<[u8]>>(out: &mut Vec<u8>, records: &[R]) {
    write_varint(out, records.len() as u64);
    for r in records {
        let r = r.as_ref();
        write_varint(out, r.len() as u64);
        out.extend_from_slice(r);
    }
}

/// The length of [`write_list`]'s encoding of `records`.
pub fn list_len<R: AsRef<[u8]>>(records: &[R]) -> usize {
    varint_len(records.len() as u64)
        + records
            .iter()
            .map(|r| record_len(r.as_ref()))
            .sum::<usize>()
}

/// Splits records into consecutive runs whose list encoding fits `budget`.
/// Every run holds at least one record (each record fits on its own: see
/// [`RECORD_BUDGET`]).
pub fn split<R: AsRef<[u8]>>(records: &[R], budget: usize) -> Vec<Range<usize>> {
    let mut runs = Vec::new();
    let mut from = 0;
    while let Some(page) = next_page(records, from, budget, |_| true) {
        runs.push(page.start..page.end);
        from = page.end;
    }
    runs
}

/// One page of the records of a slice that a filter keeps: those in
/// `start..end`, `count` of them. See [`next_page`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// The first index of the page (a kept record).
    pub start: usize,
    /// One past the last index of the page: where the next page starts.
    pub end: usize,
    /// The records kept in `start..end`.
    pub count: usize,
    size: usize,
}

impl Page {
    /// The length of the page's list encoding: the count, then each record.
    pub fn list_len(&self) -> usize {
        varint_len(self.count as u64) + self.size
    }

    /// Appends the page's list (the records of `start..end` that `keep`
    /// accepts, as [`next_page`] chose them).
    pub fn write_list<R: AsRef<[u8]>>(
        &self,
        out: &mut Vec<u8>,
        records: &[R],
        keep: impl Fn(usize) -> bool,
    ) {
        write_varint(out, self.count as u64);
        for (i, r) in records.iter().enumerate().take(self.end).skip(self.start) {
            if keep(i) {
                let r = r.as_ref();
                write_varint(out, r.len() as u64);
                out.extend_from_slice(r);
            }
        }
    }
}

/// Which list of an `Event::SnapshotPage` a [`Page`] fills (the other one
/// is empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotList {
    /// The page's `vms` (its `sources` are empty).
    Vms,
    /// The page's `sources` (its `vms` are empty).
    Sources,
}

impl Page {
    /// The length of the `Event::SnapshotPage` body holding this page (of
    /// every record in its range) in `list`.
    pub fn snapshot_len(&self) -> usize {
        varint_len(EventTag::SnapshotPage.value().into()) + self.list_len() + varint_len(0)
    }

    /// Appends the `Event::SnapshotPage` body holding this page (of every
    /// record in its range) in `list`, as [`write_snapshot_page`] would.
    pub fn write_snapshot<R: AsRef<[u8]>>(
        &self,
        out: &mut Vec<u8>,
        records: &[R],
        list: SnapshotList,
    ) {
        write_varint(out, EventTag::SnapshotPage.value().into());
        if list == SnapshotList::Sources {
            write_varint(out, 0);
        }
        self.write_list(out, records, |_| true);
        if list == SnapshotList::Vms {
            write_varint(out, 0);
        }
    }
}

/// The next page of `records`, from index `from` on, holding only the
/// records `keep` accepts (by index) whose list encoding fits `budget`; `None`
/// when no record from `from` on is kept. Every page holds at least one
/// record. Nothing is allocated, so a long list can be paged as it is sent
/// without a list of what it chose.
pub fn next_page<R: AsRef<[u8]>>(
    records: &[R],
    from: usize,
    budget: usize,
    keep: impl Fn(usize) -> bool,
) -> Option<Page> {
    let start = (from..records.len()).find(|&i| keep(i))?;
    let mut page = Page {
        start,
        end: start,
        count: 0,
        size: 0,
    };
    while page.end < records.len() {
        let i = page.end;
        if keep(i) {
            let len = record_len(records[i].as_ref());
            if page.count > 0 && page.size + len > budget {
                break;
            }
            page.size += len;
            page.count += 1;
        }
        page.end += 1;
    }
    Some(page)
}

/// Appends the body of an `Event::SnapshotPage` holding these VM and source
/// records.
pub fn write_snapshot_page<V: AsRef<[u8]>, S: AsRef<[u8]>>(
    out: &mut Vec<u8>,
    vms: &[V],
    sources: &[S],
) {
    write_varint(out, EventTag::SnapshotPage.value().into());
    write_list(out, vms);
    write_list(out, sources);
}

/// Appends the body of a `VmDetail` (the `GetVm` reply): `cursor`, the
/// record of the definition that claims the name, then the list of the
/// others' records.
pub fn write_detail<R: AsRef<[u8]>>(out: &mut Vec<u8>, cursor: Cursor, vm: &[u8], others: &[R]) {
    write_varint(out, cursor.epoch.0);
    write_varint(out, cursor.generation);
    write_varint(out, vm.len() as u64);
    out.extend_from_slice(vm);
    write_list(out, others);
}

/// The length of [`write_detail`]'s encoding.
pub fn detail_len<R: AsRef<[u8]>>(cursor: Cursor, vm: &[u8], others: &[R]) -> usize {
    varint_len(cursor.epoch.0) + varint_len(cursor.generation) + record_len(vm) + list_len(others)
}

/// Appends the body of one `Event::Batch` frame: part of `generation`'s
/// change records, `last` on its final part.
pub fn write_batch<R: AsRef<[u8]>>(out: &mut Vec<u8>, generation: u64, changes: &[R], last: bool) {
    write_varint(out, EventTag::Batch.value().into());
    write_varint(out, generation);
    write_list(out, changes);
    out.push(u8::from(last));
}

/// The `Event::Batch` bodies of one generation: every change encoded as a
/// record, split to fit the smallest frame size any peer may negotiate, so
/// the same bodies serve every subscriber.
pub fn batch_bodies(generation: u64, changes: &[Change]) -> Vec<Vec<u8>> {
    let records: Vec<Vec<u8>> = changes
        .iter()
        .map(|c| encode_change(c, RECORD_BUDGET))
        .collect();
    let runs = split(&records, budget(MIN_MAX_FRAME));
    let n = runs.len();
    runs.into_iter()
        .enumerate()
        .map(|(i, run)| {
            let mut body = Vec::new();
            write_batch(&mut body, generation, &records[run], i + 1 == n);
            body
        })
        .collect()
}

/// Encodes a catalog value. It cannot fail: catalog types have no maps, no
/// sequences of unknown length and no serializers that error.
pub fn encode_record<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("catalog types always encode")
}

/// Keeps the longest prefix of `list` for which `fits` holds (`fits` must
/// hold for every prefix of a prefix that fits); returns how many items were
/// dropped and whether even the empty prefix failed.
fn trim<T: Clone>(list: &mut Vec<T>, mut fits: impl FnMut(&[T]) -> bool) -> (usize, bool) {
    let all = std::mem::take(list);
    if !fits(&[]) {
        return (all.len(), false);
    }
    let (mut lo, mut hi) = (0, all.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if fits(&all[..mid]) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    *list = all[..lo].to_vec();
    (all.len() - lo, true)
}

fn truncated(path: &str, what: String) -> Diagnostic {
    Diagnostic {
        code: DiagCode::Truncated,
        severity: Severity::Warning,
        path: path.to_owned(),
        message: format!("{what} not shown: they do not fit in one frame"),
    }
}

/// The diagnostics in the order trimming keeps them: errors before
/// warnings, each in its original order, so that what makes a definition
/// rejected is the last thing dropped.
fn errors_first(diagnostics: &[Diagnostic]) -> Vec<Diagnostic> {
    let mut d = diagnostics.to_vec();
    d.sort_by_key(|d| d.severity != Severity::Error);
    d
}

/// The VM entry, trimmed to encode in at most `budget` bytes as a record:
/// diagnostics are dropped first (warnings before errors), then providers,
/// and a `truncated` diagnostic says how many.
pub fn fit_vm(entry: &VmEntry, budget: usize) -> Cow<'_, VmEntry> {
    if record_len(&encode_record(entry)) <= budget {
        return Cow::Borrowed(entry);
    }
    let mut e = entry.clone();
    let path = entry.path.clone();
    let fits = |e: &VmEntry| record_len(&encode_record(e)) <= budget;
    let mut diags = errors_first(&entry.diagnostics);
    let (dropped, ok) = trim(&mut diags, |kept| {
        let mut t = e.clone();
        t.diagnostics = kept.to_vec();
        t.diagnostics.push(truncated(
            &path,
            format!("{} more diagnostics", entry.diagnostics.len() - kept.len()),
        ));
        fits(&t)
    });
    e.diagnostics = diags;
    if ok {
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
        fits(&t)
    });
    e.providers = providers;
    e.diagnostics = vec![truncated(
        &path,
        format!("{dropped} diagnostics and {gone} providers"),
    )];
    Cow::Owned(e)
}

/// The source, trimmed like [`fit_vm`] (diagnostics only, warnings first).
pub fn fit_source(entry: &SourceEntry, budget: usize) -> Cow<'_, SourceEntry> {
    if record_len(&encode_record(entry)) <= budget {
        return Cow::Borrowed(entry);
    }
    let mut e = entry.clone();
    let mut diags = errors_first(&entry.diagnostics);
    let (dropped, _) = trim(&mut diags, |kept| {
        let mut t = e.clone();
        t.diagnostics = kept.to_vec();
        t.diagnostics.push(truncated(
            &e.path,
            format!("{} more diagnostics", entry.diagnostics.len() - kept.len()),
        ));
        record_len(&encode_record(&t)) <= budget
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
mod tests;
