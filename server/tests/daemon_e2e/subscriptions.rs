//! Subscriptions and mirrors: resuming without gaps, resyncs after a restart or a lag.

use super::*;

#[tokio::test]
async fn subscribers_resume_without_gaps_and_resync_after_a_restart() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.user_vm("a");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let mut w = Watch::new(d.socket());
    let cursor = match next(&mut w).await {
        WatchEvent::Reset {
            cursor,
            reason: ResetReason::Initial,
            changes,
        } => {
            assert_eq!(changes.len(), 3, "a source pair and one VM: {changes:?}");
            cursor
        }
        e => panic!("{e:?}"),
    };
    drop(w);
    // Two generations while nobody watches.
    d.user_vm("b");
    c.rescan(false).await.unwrap();
    d.user_vm("c");
    c.rescan(false).await.unwrap();
    let mut w = Watch::since(d.socket(), Some(cursor));
    let mut replayed = Vec::new();
    loop {
        match next(&mut w).await {
            WatchEvent::Changes { generation, .. } => replayed.push(generation),
            WatchEvent::Resumed { from, to } => {
                assert_eq!(from, cursor);
                assert_eq!(to.generation, cursor.generation + 2);
                break;
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(replayed, [cursor.generation + 1, cursor.generation + 2]);
    // This watch started from a saved cursor: its mirror holds what it replayed.
    assert_eq!(w.mirror().active().count(), 2);
    // A daemon restart: a new epoch, and a snapshot with the differences.
    drop(c);
    d.stop();
    std::fs::remove_dir_all(d.user().join("b")).unwrap();
    d.start().unwrap();
    loop {
        match next(&mut w).await {
            WatchEvent::Disconnected { .. } => continue,
            WatchEvent::Reset {
                cursor: new,
                reason,
                changes,
            } => {
                assert_eq!(reason, ResetReason::NewEpoch);
                assert_ne!(new.epoch, cursor.epoch);
                // Exactly the differences from this watch's mirror (which
                // holds only what it replayed: b and c): b is gone, a is
                // new to it, the user source lost a definition, and the
                // built-in source is new to it.
                let kinds = kinds(&changes);
                assert_eq!(
                    kinds,
                    [
                        ("builtin".to_string(), ChangeKind::Added),
                        ("user".into(), ChangeKind::Changed),
                        ("b".into(), ChangeKind::Removed),
                        ("a".into(), ChangeKind::Added),
                    ],
                    "{changes:?}"
                );
                break;
            }
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(w.mirror().active().count(), 2);
}

/// How often the stalled subscriber reads one frame. A peer that reads
/// nothing for the daemon's send deadline (10 s) is cut off, as it should
/// be, and the 1,000 rescans below can take longer than that on a loaded
/// machine (issue 22: a failure under load): one frame now and then keeps
/// each of the daemon's sends far within its deadline, a margin of ten
/// that load cannot eat, while the subscriber stays far slower than the
/// changes (a few hundred frames fill its socket and its queue; it reads
/// one a second), so it still lags.
const TRICKLE: Duration = Duration::from_secs(1);

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_a_resync_and_others_get_everything() {
    let mut d = daemon();
    d.arg("--no-watch");
    let vm = d.user_vm("v");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    // The stalled subscriber: subscribes, then all but stops reading.
    let stalled = Arc::new(raw(&d.socket()).await);
    stalled
        .send(&message::request(1, &Subscribe { since: None }, MIN_MAX_FRAME).unwrap())
        .await
        .unwrap();
    let trickled = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let trickle = tokio::spawn({
        let (stalled, trickled) = (stalled.clone(), trickled.clone());
        async move {
            let mut buf = vec![0u8; LIMIT_MAX_FRAME as usize + 1];
            loop {
                tokio::time::sleep(TRICKLE).await;
                let n = stalled.recv(&mut buf).await.unwrap().bytes_read();
                trickled.lock().unwrap().push(buf[..n].to_vec());
            }
        }
    });
    let mut good = Watch::new(d.socket());
    let start = match next(&mut good).await {
        WatchEvent::Reset { cursor, .. } => cursor.generation,
        e => panic!("{e:?}"),
    };
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 1000 {
            match next(&mut good).await {
                WatchEvent::Changes {
                    generation,
                    changes,
                } => {
                    assert_eq!(changes.len(), 1);
                    seen.push(generation);
                }
                e => panic!("the reading subscriber must not lag: {e:?}"),
            }
        }
        seen
    });
    // 1,000 changes, one generation each: the kernel grows by a byte.
    for i in 0..1000 {
        std::fs::write(vm.join("vmlinux"), vec![b'k'; i + 10]).unwrap();
        let r = c.rescan(false).await.unwrap();
        assert_eq!(r.changes.len(), 1, "{:?}", r.changes);
    }
    let seen = tokio::time::timeout(Duration::from_secs(120), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, (start + 1..=start + 1000).collect::<Vec<_>>());
    // The daemon was never held up: it still answers.
    assert_eq!(c.info().await.unwrap().cursor.generation, start + 1000);
    // The stalled one finally reads: a Reset { Lagged } and a fresh snapshot.
    // (A receive stopped half-way leaves its frame in the socket.)
    trickle.abort();
    let _ = trickle.await;
    let lagged_in = |frame: &[u8]| {
        let f = decode_frame(frame, LIMIT_MAX_FRAME).unwrap();
        match codec::decode(f.body, Compat::Exact) {
            Ok(Event::Reset {
                reason: ResetReason::Lagged,
                cursor,
            }) => Some(cursor),
            _ => None,
        }
    };
    let mut lagged = trickled.lock().unwrap().iter().find_map(|f| lagged_in(f));
    let mut buf = vec![0u8; LIMIT_MAX_FRAME as usize + 1];
    for _ in 0..5000 {
        if lagged.is_some() {
            break;
        }
        let n = tokio::time::timeout(Duration::from_secs(60), stalled.recv(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .bytes_read();
        lagged = lagged_in(&buf[..n]);
    }
    assert_eq!(
        lagged.map(|c| c.generation),
        Some(start + 1000),
        "told it lagged, then resynced"
    );
}

#[tokio::test]
async fn a_resumed_mirror_gets_exactly_the_missed_changes() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.user_vm("a");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    let saved = w.mirror().clone();
    drop(w);
    d.user_vm("b");
    c.rescan(false).await.unwrap();
    let mut w = Watch::resume(d.socket(), saved);
    assert!(matches!(next(&mut w).await, WatchEvent::Changes { .. }));
    assert!(matches!(next(&mut w).await, WatchEvent::Resumed { .. }));
    let names: Vec<_> = w.mirror().active().map(|e| e.name.to_string()).collect();
    assert_eq!(names, ["a", "b"]);
    // After a restart, the reset reports exactly what differs.
    drop(c);
    d.stop();
    std::fs::remove_dir_all(d.user().join("a")).unwrap();
    d.start().unwrap();
    loop {
        match next(&mut w).await {
            WatchEvent::Disconnected { .. } => continue,
            WatchEvent::Reset {
                reason, changes, ..
            } => {
                assert_eq!(reason, ResetReason::NewEpoch);
                let kinds = kinds(&changes);
                assert_eq!(
                    kinds,
                    [
                        ("user".to_string(), ChangeKind::Changed),
                        ("a".into(), ChangeKind::Removed)
                    ]
                );
                break;
            }
            e => panic!("{e:?}"),
        }
    }
}

/// Regression (issue 12, item 5): a definition whose `vmlinux` grew while
/// the daemon was down was not reported `changed` after the restart (its
/// entry looked the same); entries now carry the definition's fingerprint.
#[tokio::test]
async fn watch_reports_a_definition_changed_while_the_daemon_was_down() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.user_vm("grows");
    d.user_vm("same");
    d.start().unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    let before = w.mirror().get("grows").unwrap().clone();
    assert!(before.fingerprint.is_some() && before.id.is_some());
    d.stop();
    let kernel = d.user().join("grows/vmlinux");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&kernel)
        .unwrap();
    std::io::Write::write_all(&mut f, b" and more").unwrap();
    drop(f);
    d.start().unwrap();
    loop {
        match next(&mut w).await {
            WatchEvent::Disconnected { .. } => continue,
            WatchEvent::Reset {
                reason, changes, ..
            } => {
                assert_eq!(reason, ResetReason::NewEpoch);
                assert_eq!(
                    kinds(&changes),
                    [("grows".to_string(), ChangeKind::Changed)]
                );
                break;
            }
            e => panic!("{e:?}"),
        }
    }
    let after = w.mirror().get("grows").unwrap();
    assert_ne!(after.fingerprint, before.fingerprint);
    assert_eq!(after.id, before.id, "the id survives the restart");
}
