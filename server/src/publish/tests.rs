//! The hub: snapshots, resumption from the history, fan-out and lag.

use super::*;
use vm_catalog_protocol::{ChangeItem, ChangeKind, SourceEntry, SourceKind, SourceState, Trust};

fn source(label: &str) -> SourceEntry {
    SourceEntry {
        label: label.parse().unwrap(),
        kind: SourceKind::Directory,
        trust: Trust::Untrusted,
        path: "/x".into(),
        device: None,
        partuuid: None,
        state: SourceState::Ready,
        read_only: false,
        precedence: 0,
        definitions: 0,
        diagnostics: vec![],
        revision: 0,
    }
}

fn publish_generation(hub: &Hub, generation: u64) {
    let mut next = (*hub.current()).clone();
    next.cursor.generation = generation;
    let change = Change {
        generation,
        kind: ChangeKind::Added,
        item: ChangeItem::Source(source("s")),
    };
    hub.publish(next, vec![change]);
}

#[test]
fn subscribe_without_since_gets_a_snapshot() {
    let hub = Hub::new(Epoch(7));
    let (start, _sub) = hub.subscribe(None);
    assert!(matches!(
        start,
        Start::Snapshot {
            reason: ResetReason::Initial,
            ..
        }
    ));
}

#[test]
fn resume_gets_exactly_the_missed_batches_then_live_ones() {
    let hub = Hub::new(Epoch(7));
    for g in 1..=5 {
        publish_generation(&hub, g);
    }
    let since = Cursor {
        epoch: Epoch(7),
        generation: 2,
    };
    let (start, mut sub) = hub.subscribe(Some(since));
    let Start::Resume { batches, now, .. } = start else {
        panic!("{start:?}")
    };
    assert_eq!(
        batches.iter().map(|b| b.generation).collect::<Vec<_>>(),
        [3, 4, 5]
    );
    assert_eq!(now.generation, 5);
    publish_generation(&hub, 6);
    assert_eq!(sub.queue.try_recv().unwrap().generation, 6);
    assert!(sub.queue.try_recv().is_err());
}

#[test]
fn since_from_another_epoch_or_the_future_resets() {
    let hub = Hub::new(Epoch(7));
    publish_generation(&hub, 1);
    let (s, _a) = hub.subscribe(Some(Cursor {
        epoch: Epoch(8),
        generation: 1,
    }));
    assert!(matches!(
        s,
        Start::Snapshot {
            reason: ResetReason::NewEpoch,
            ..
        }
    ));
    let (s, _b) = hub.subscribe(Some(Cursor {
        epoch: Epoch(7),
        generation: 9,
    }));
    assert!(matches!(
        s,
        Start::Snapshot {
            reason: ResetReason::Unknown,
            ..
        }
    ));
    let (s, _c) = hub.subscribe(Some(Cursor {
        epoch: Epoch(7),
        generation: 1,
    }));
    assert!(matches!(s, Start::Resume { .. }));
}

#[test]
fn since_older_than_the_history_resets() {
    let hub = Hub::new(Epoch(7));
    for g in 1..=(HISTORY as u64 + 10) {
        publish_generation(&hub, g);
    }
    let (s, _a) = hub.subscribe(Some(Cursor {
        epoch: Epoch(7),
        generation: 5,
    }));
    assert!(matches!(
        s,
        Start::Snapshot {
            reason: ResetReason::TooOld,
            ..
        }
    ));
    let (s, _b) = hub.subscribe(Some(Cursor {
        epoch: Epoch(7),
        generation: 10,
    }));
    assert!(matches!(s, Start::Resume { ref batches, .. } if batches.len() == HISTORY));
}

#[test]
fn a_full_queue_marks_the_subscriber_lagged_and_resync_empties_it() {
    let hub = Hub::new(Epoch(7));
    let (_, mut sub) = hub.subscribe(None);
    let (_, mut other) = hub.subscribe(None);
    for g in 1..=(SUBSCRIPTION_QUEUE as u64 + 5) {
        publish_generation(&hub, g);
        // The other subscriber keeps up.
        assert_eq!(other.queue.try_recv().unwrap().generation, g);
    }
    assert!(sub.lag.is_raised());
    assert!(!other.lag.is_raised());
    let snap = sub.resync();
    assert_eq!(snap.cursor.generation, SUBSCRIPTION_QUEUE as u64 + 5);
    assert!(sub.queue.try_recv().is_err());
    assert!(!sub.lag.is_raised());
    publish_generation(&hub, SUBSCRIPTION_QUEUE as u64 + 6);
    assert_eq!(
        sub.queue.try_recv().unwrap().generation,
        SUBSCRIPTION_QUEUE as u64 + 6
    );
}

#[test]
fn dropping_a_subscription_unsubscribes() {
    let hub = Hub::new(Epoch(7));
    let (_, sub) = hub.subscribe(None);
    assert_eq!(hub.subscriber_count(), 1);
    drop(sub);
    assert_eq!(hub.subscriber_count(), 0);
}

fn vm(name: &str, source: &str, revision: u64) -> vm_catalog_protocol::VmEntry {
    vm_catalog_protocol::VmEntry {
        name: name.parse().unwrap(),
        source: source.parse().unwrap(),
        state: vm_catalog_protocol::VmState::Active,
        path: format!("/{source}/{name}"),
        view: Some(format!("/run/vm/{name}/config")),
        service: None,
        providers: vec![],
        diagnostics: vec![],
        restart_pending: false,
        shadowed_by: None,
        revision,
        fingerprint: Some(revision),
        id: None,
    }
}

/// A new generation encodes only the entries its batch names; every other
/// record is the previous generation's, the same bytes (not a copy), and
/// the whole equals a fresh encoding of the generation, for both audiences.
#[test]
fn records_are_encoded_once_per_change() {
    let hub = Hub::new(Epoch(7));
    let cursor = |generation| Cursor {
        epoch: Epoch(7),
        generation,
    };
    let first = Published::new(
        cursor(1),
        vec![
            vm("a", "s", 1),
            vm("b", "s", 1),
            vm("b", "t", 1),
            vm("c", "s", 1),
        ],
        vec![source("s"), source("t")],
        Default::default(),
    );
    hub.publish(first, vec![]);
    let old = hub.current();
    let old_vm = old.records_for(Audience::Vm).clone();
    // b from t changed, d was added, c went.
    let changed = vm("b", "t", 2);
    let added = vm("d", "s", 2);
    let changes = vec![
        Change {
            generation: 2,
            kind: ChangeKind::Changed,
            item: ChangeItem::Vm(changed.clone()),
        },
        Change {
            generation: 2,
            kind: ChangeKind::Added,
            item: ChangeItem::Vm(added.clone()),
        },
        Change {
            generation: 2,
            kind: ChangeKind::Removed,
            item: ChangeItem::Vm(vm("c", "s", 2)),
        },
    ];
    let next = Published::new(
        cursor(2),
        vec![vm("a", "s", 1), vm("b", "s", 1), changed, added],
        vec![source("s"), source("t")],
        Default::default(),
    );
    hub.publish(next, changes);
    let new = hub.current();
    for (audience, old) in [(Audience::Host, old.records()), (Audience::Vm, &old_vm)] {
        let got = new.records_for(audience);
        let shared: Vec<bool> = (0..4)
            .map(|i| old.vms.iter().any(|r| Arc::ptr_eq(r, &got.vms[i])))
            .collect();
        assert_eq!(shared, [true, true, false, false], "{audience:?}");
        assert!(Arc::ptr_eq(&old.sources[1], &got.sources[1]));
        let fresh = (*new).clone();
        assert_eq!(got.vms, fresh.records_for(audience).vms, "{audience:?}");
        assert_eq!(got.sources, fresh.records_for(audience).sources);
    }
}

/// A generation no reader holds becomes the next one in place: the
/// entries the batch names are replaced, inserted (by their source's
/// precedence among the others of their name) or removed, and the records
/// are those of a fresh encoding, for both audiences; one a reader holds
/// is left as it was, and the next is built beside it.
#[test]
fn a_generation_no_reader_holds_becomes_the_next_in_place() {
    let cursor = |generation| Cursor {
        epoch: Epoch(7),
        generation,
    };
    let sources = || vec![source("s"), source("t")];
    let first = vec![vm("a", "s", 1), vm("b", "t", 1), vm("c", "s", 1)];
    let next: Vec<Arc<vm_catalog_protocol::VmEntry>> = [
        vm("a", "s", 2),
        vm("b", "s", 2),
        vm("b", "t", 1),
        vm("d", "t", 2),
    ]
    .into_iter()
    .map(Arc::new)
    .collect();
    let change = |kind, e: vm_catalog_protocol::VmEntry| Change {
        generation: 2,
        kind,
        item: ChangeItem::Vm(e),
    };
    let changes = vec![
        change(ChangeKind::Changed, vm("a", "s", 2)),
        change(ChangeKind::Added, vm("b", "s", 2)),
        change(ChangeKind::Removed, vm("c", "s", 2)),
        change(ChangeKind::Added, vm("d", "t", 2)),
    ];
    let entry = |e: &vm_catalog_protocol::VmEntry| {
        next.iter()
            .find(|n| n.name == e.name && n.source == e.source)
            .cloned()
    };
    for held in [false, true] {
        let hub = Hub::new(Epoch(7));
        hub.publish(
            Published::new(cursor(1), first.clone(), sources(), Default::default()),
            vec![],
        );
        let _ = hub.current().records_for(Audience::Vm);
        let reader = held.then(|| hub.current());
        hub.publish_changes(
            (cursor(2), sources(), Default::default()),
            changes.clone(),
            &entry,
            &|| next.clone(),
        );
        let got = hub.current();
        assert_eq!(got.cursor, cursor(2));
        assert!(got.vms.iter().map(|e| &**e).eq(next.iter().map(|e| &**e)));
        // What the changes name is the catalog's entry (`entry`'s).
        for k in [0, 1, 3] {
            assert!(Arc::ptr_eq(&got.vms[k], &next[k]), "{k}");
        }
        // What they do not name: the generation before's when patched in
        // place, built from `all` when a reader held it.
        assert_eq!(Arc::ptr_eq(&got.vms[2], &next[2]), held);
        let fresh = (*got).clone();
        for audience in [Audience::Host, Audience::Vm] {
            assert_eq!(
                got.records_for(audience).vms,
                fresh.records_for(audience).vms
            );
            assert_eq!(
                got.records_for(audience).sources,
                fresh.records_for(audience).sources
            );
        }
        if let Some(reader) = reader {
            assert_eq!(reader.cursor, cursor(1), "a held generation stays");
            assert_eq!(reader.vms.len(), 3);
        }
    }
}
