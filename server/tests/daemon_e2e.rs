//! The real `vm-catalogd` binary, end to end over its socket: queries,
//! rescans, watches, subscriptions across restarts, slow and hostile
//! clients, permissions, signals.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog::{Client, Error, Watch, WatchEvent};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

fn daemon() -> TestDaemon {
    TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"))
}

/// Waits for the next watch event, at most 30 s.
async fn next(w: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(30), w.next())
        .await
        .expect("a watch event in time")
        .expect("no fatal watch error")
}

/// Waits until `cond` holds, at most 30 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What each change is about (a VM's name or a source's label) and its kind.
fn kinds(changes: &[Change]) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| match &c.item {
            ChangeItem::Vm(e) => (e.name.to_string(), c.kind),
            ChangeItem::Source(s) => (s.label.to_string(), c.kind),
        })
        .collect()
}

fn names(list: &vm_catalog::VmList) -> Vec<String> {
    list.vms
        .iter()
        .map(|e| format!("{}@{}:{}", e.name, e.source, e.state.as_str()))
        .collect()
}

#[tokio::test]
async fn list_get_not_found_and_sources() {
    let mut d = daemon();
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.user_vm("appvm");
    d.tree().provider("user", "appvm", "netvm");
    std::fs::create_dir_all(d.user().join("broken/blk")).unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    // Readiness came after the first scan: everything is there already.
    let all = c.list_vms(true, None).await.unwrap();
    assert_eq!(
        names(&all),
        [
            "appvm@user:active",
            "broken@user:rejected",
            "netvm@builtin:active",
            "netvm@user:shadowed"
        ]
    );
    assert_eq!(all.cursor.epoch, c.welcome().epoch);
    let active = c.list_vms(false, None).await.unwrap();
    assert_eq!(
        names(&active),
        ["appvm@user:active", "netvm@builtin:active"]
    );
    let d1 = c.get_vm(&"netvm".parse().unwrap()).await.unwrap();
    assert_eq!(d1.vm.source.as_str(), "builtin");
    assert_eq!(d1.others.len(), 1);
    assert_eq!(
        d1.others[0].shadowed_by.as_ref().map(|l| l.as_str()),
        Some("builtin")
    );
    let broken = c.get_vm(&"broken".parse().unwrap()).await.unwrap();
    assert!(
        broken
            .vm
            .diagnostics
            .iter()
            .any(|x| x.code == DiagCode::MissingKernel)
    );
    let e = c.get_vm(&"nosuch".parse().unwrap()).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let sources = c.sources().await.unwrap();
    let labels: Vec<_> = sources
        .sources
        .iter()
        .map(|s| (s.label.as_str(), s.kind, s.state))
        .collect();
    assert_eq!(
        labels,
        [
            ("builtin", SourceKind::Builtin, SourceState::Ready),
            ("user", SourceKind::Directory, SourceState::Ready)
        ]
    );
    let info = c.info().await.unwrap();
    assert_eq!(info.applier, "none");
    assert_eq!(info.active_vms, 2);
    assert_eq!(info.last_rescan.unwrap().trigger, RescanTrigger::Startup);
}

#[tokio::test]
async fn rescan_and_dry_run_see_a_vm_added_on_disk() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.user_vm("one");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let g0 = c.info().await.unwrap().cursor.generation;
    d.user_vm("two");
    // A dry run shows the change but publishes nothing.
    let dry = c.rescan(true).await.unwrap();
    assert!(dry.outcome.dry_run);
    assert_eq!(dry.outcome.generation, g0);
    assert_eq!(dry.outcome.apply.status, ApplyStatus::Disabled);
    assert!(dry.changes.iter().any(
        |ch| matches!(&ch.item, ChangeItem::Vm(e) if e.name.as_str() == "two")
            && ch.kind == ChangeKind::Added
    ));
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 1);
    // The real one publishes a new generation.
    let real = c.rescan(false).await.unwrap();
    assert_eq!(real.outcome.generation, g0 + 1);
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 2);
    // Nothing changed: same generation, no changes.
    let again = c.rescan(false).await.unwrap();
    assert!(again.changes.is_empty());
    assert_eq!(again.outcome.generation, g0 + 1);
    let info = c.info().await.unwrap();
    assert_eq!(info.cursor.generation, g0 + 1);
    assert_eq!(info.last_rescan.unwrap().trigger, RescanTrigger::Request);
}

#[tokio::test]
async fn concurrent_rescans_coalesce_and_each_sees_its_change() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.start().unwrap();
    let c = Arc::new(Client::connect(d.socket()).await.unwrap());
    let mut tasks = Vec::new();
    for i in 0..20 {
        // Each caller writes its VM, then asks: the reply must show it.
        d.user_vm(&format!("vm-{i:02}"));
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.rescan(false).await.unwrap();
            let list = c.list_vms(false, None).await.unwrap();
            assert!(
                list.cursor.generation >= r.outcome.generation
                    && list
                        .vms
                        .iter()
                        .any(|e| e.name.as_str() == format!("vm-{i:02}")),
                "the reply of caller {i} reflects its change"
            );
            r.outcome.generation
        }));
    }
    let mut generations = Vec::new();
    for t in tasks {
        generations.push(t.await.unwrap());
    }
    let rescans = d.log().matches("rescan done").count();
    // 20 requests, one start-up rescan: coalescing means fewer rescans.
    assert!(
        rescans < 21,
        "{rescans} rescans for 20 requests\n{}",
        d.log()
    );
    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 20);
    generations.dedup();
    assert!(generations.len() < 20, "{generations:?}");
}

#[tokio::test]
async fn a_change_in_a_watched_directory_triggers_a_rescan() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    d.user_vm("one");
    d.start().unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    // A new definition directory in the source root.
    d.user_vm("two");
    match next(&mut w).await {
        WatchEvent::Changes { changes, .. } => {
            assert!(changes.iter().any(|c| c.kind == ChangeKind::Added
                && matches!(&c.item, ChangeItem::Vm(e) if e.name.as_str() == "two")));
        }
        e => panic!("{e:?}"),
    }
    // A change inside a definition (its disk removed): watched too.
    std::fs::remove_file(d.user().join("one/blk/root.img")).unwrap();
    match next(&mut w).await {
        WatchEvent::Changes { changes, .. } => {
            assert!(changes.iter().any(|c| matches!(&c.item,
                ChangeItem::Vm(e) if e.name.as_str() == "one" && e.state == VmState::Rejected)));
        }
        e => panic!("{e:?}"),
    }
    assert!(d.log().contains("trigger=\"watch\""), "{}", d.log());
}

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

#[tokio::test]
async fn a_subscriber_that_stops_reading_gets_a_resync_and_others_get_everything() {
    let mut d = daemon();
    d.arg("--no-watch");
    let vm = d.user_vm("v");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    // The stalled subscriber: subscribes, then stops reading.
    let stalled = raw(&d.socket()).await;
    stalled
        .send(&message::request(1, &Subscribe { since: None }, MIN_MAX_FRAME).unwrap())
        .await
        .unwrap();
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
    let mut buf = vec![0u8; LIMIT_MAX_FRAME as usize + 1];
    let mut lagged = None;
    for _ in 0..5000 {
        let n = tokio::time::timeout(Duration::from_secs(10), stalled.recv(&mut buf))
            .await
            .unwrap()
            .unwrap()
            .bytes_read();
        let f = decode_frame(&buf[..n], LIMIT_MAX_FRAME).unwrap();
        if let Ok(Event::Reset {
            reason: ResetReason::Lagged,
            cursor,
        }) = codec::decode(f.body, Compat::Exact)
        {
            lagged = Some(cursor);
            break;
        }
    }
    assert_eq!(
        lagged.map(|c| c.generation),
        Some(start + 1000),
        "told it lagged, then resynced"
    );
}

use vm_catalog_tests::wire::{connect, recv_error as read_error};

/// A raw connection after the handshake.
async fn raw(path: &std::path::Path) -> UnixSeqpacket {
    connect(path).await.0
}

#[tokio::test]
async fn hostile_clients_do_not_disturb_others() {
    let mut d = daemon();
    d.user_vm("a");
    d.start().unwrap();
    let good = Client::connect(d.socket()).await.unwrap();
    // A client that connects and never says Hello (the handshake times out
    // after 5 s); meanwhile others are served.
    let silent = UnixSeqpacket::connect(d.socket()).await.unwrap();
    // Garbage, an empty datagram, an oversized datagram.
    let g = raw(&d.socket()).await;
    g.send(b"\x00\x01garbage that is not a frame")
        .await
        .unwrap();
    assert_eq!(read_error(&g).await.code, ErrorCode::ProtocolViolation);
    let e = raw(&d.socket()).await;
    e.send(&[]).await.unwrap();
    let o = raw(&d.socket()).await;
    o.send(&vec![7u8; 100_000]).await.unwrap();
    let err = read_error(&o).await;
    assert_eq!(err.code, ErrorCode::FrameTooLarge);
    for _ in 0..10 {
        assert_eq!(good.list_vms(false, None).await.unwrap().vms.len(), 1);
    }
    assert_eq!(read_error(&silent).await.code, ErrorCode::Timeout);
    let mut buf = [0u8; 16];
    assert_eq!(
        e.recv(&mut buf).await.unwrap().bytes_read(),
        0,
        "empty datagram = EOF: closed"
    );
    assert_eq!(good.ping(vec![1, 2, 3]).await.unwrap(), [1, 2, 3]);
}

#[tokio::test]
async fn only_root_and_the_admin_group_may_rescan() {
    let Some(()) = vm_catalog_tests::require_root("running clients as other users") else {
        return;
    };
    let Some(setpriv) = vm_catalog_tests::require_tool("setpriv") else {
        return;
    };
    let mut d = daemon();
    d.arg("--admin-group").arg("4242");
    d.start().unwrap();
    let cli = workspace_bin("vm-catalog");
    let run_as = |groups: &str, args: &[&str]| {
        Command::new(&setpriv)
            .args(["--reuid", "65534", "--regid", "65534", groups])
            .arg(&cli)
            .arg("--socket")
            .arg(d.socket())
            .args(args)
            .output()
            .unwrap()
    };
    // Anyone may read.
    let list = run_as("--clear-groups", &["list"]);
    assert!(list.status.success(), "{list:?}");
    // Not root, not in the admin group: refused (exit 4).
    let denied = run_as("--clear-groups", &["rescan"]);
    assert_eq!(denied.status.code(), Some(4), "{denied:?}");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("permission-denied"),
        "{denied:?}"
    );
    // In the admin group: allowed.
    let admin = run_as("--groups=4242", &["rescan"]);
    assert!(admin.status.success(), "{admin:?}");
}

#[tokio::test]
async fn sighup_rescans() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    d.user_vm("late");
    d.signal(libc::SIGHUP);
    eventually("the VM after SIGHUP", async || {
        c.list_vms(false, None).await.unwrap().vms.len() == 1
    })
    .await;
    assert_eq!(
        c.info().await.unwrap().last_rescan.unwrap().trigger,
        RescanTrigger::Signal
    );
}

#[tokio::test]
async fn sigterm_says_goodbye_removes_the_socket_and_exits_0() {
    let mut d = daemon();
    d.user_vm("a");
    d.start().unwrap();
    let mut w = Watch::new(d.socket());
    assert!(matches!(next(&mut w).await, WatchEvent::Reset { .. }));
    let status = d.stop();
    assert!(status.success(), "{status}\n{}", d.log());
    assert!(!d.socket().exists(), "the socket is removed");
    match next(&mut w).await {
        WatchEvent::Disconnected {
            error: Error::Daemon(b),
            ..
        } => assert_eq!(b.code, ErrorCode::ShuttingDown),
        WatchEvent::Disconnected {
            error: Error::Goodbye(_),
            ..
        } => {}
        e => panic!("{e:?}"),
    }
    let log = d.log();
    assert!(log.contains("stopping") && log.contains("stopped"), "{log}");
}

#[tokio::test]
async fn a_second_daemon_on_the_same_socket_is_refused() {
    let mut d = daemon();
    d.start().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vm-catalogd"))
        .args(["--socket"])
        .arg(d.socket())
        .args([
            "--no-partitions",
            "--apply",
            "none",
            "--builtin",
            "/nonexistent",
        ])
        .arg("--state-dir")
        .arg(d.tree().join("state2"))
        .arg("--vm-dir")
        .arg(d.tree().join("vm2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another vm-catalogd holds"),
        "{out:?}"
    );
    // The first one is untouched.
    Client::connect(d.socket())
        .await
        .unwrap()
        .ping(vec![])
        .await
        .unwrap();
}

/// Regression (review): a watch that could not be added (the directory did
/// not exist yet) or that the kernel dropped (the directory was removed)
/// was never tried again, so later changes there went unnoticed.
#[tokio::test]
async fn watches_follow_directories_created_later_and_recreated() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    // The `user` source root does not exist yet.
    std::fs::remove_dir(d.user()).unwrap();
    d.start().unwrap();
    let c = Client::connect(d.socket()).await.unwrap();
    let state = async |c: &Client, name: &str| {
        c.list_vms(true, None)
            .await
            .unwrap()
            .vms
            .into_iter()
            .find(|e| e.name.as_str() == name)
            .map(|e| e.state)
    };
    // The source root appears: noticed through its parent.
    std::fs::create_dir(d.user()).unwrap();
    std::fs::create_dir(d.user().join("vm1")).unwrap();
    eventually("vm1 seen, rejected", async || {
        state(&c, "vm1").await == Some(VmState::Rejected)
    })
    .await;
    // blk/ created after the first scan saw vm1, then a disk in it.
    std::fs::write(d.user().join("vm1/vmlinux"), b"k").unwrap();
    std::fs::create_dir(d.user().join("vm1/blk")).unwrap();
    eventually("a rescan after blk/ appeared", async || {
        c.list_vms(true, None).await.unwrap().vms.iter().any(|e| {
            e.name.as_str() == "vm1" && e.diagnostics.iter().any(|x| x.code == DiagCode::NoDisk)
        })
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    std::fs::write(d.user().join("vm1/blk/root.img"), b"disk").unwrap();
    eventually("vm1 active once its disk exists", async || {
        state(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
    // Removed and made again: the new directory is watched too.
    std::fs::remove_dir_all(d.user().join("vm1")).unwrap();
    eventually("vm1 gone", async || state(&c, "vm1").await.is_none()).await;
    std::fs::create_dir(d.user().join("vm1")).unwrap();
    eventually("vm1 back, rejected", async || {
        state(&c, "vm1").await == Some(VmState::Rejected)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.tree().vm("user", "vm1");
    eventually("vm1 active again", async || {
        state(&c, "vm1").await == Some(VmState::Active)
    })
    .await;
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

#[test]
fn the_blocking_client_makes_every_call() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.builtin_vm("netvm");
    d.user_vm("netvm");
    d.start().unwrap();
    let mut c = vm_catalog::BlockingClient::connect(d.socket()).unwrap();
    assert_eq!(c.ping(vec![1, 2]).unwrap(), [1, 2]);
    assert_eq!(c.info().unwrap().active_vms, 1);
    let all = c.list_vms(true, None).unwrap();
    assert_eq!(all.vms.len(), 2);
    let detail = c.get_vm(&"netvm".parse().unwrap()).unwrap();
    assert_eq!(detail.others.len(), 1);
    assert!(
        c.get_vm(&"nosuch".parse().unwrap())
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(c.sources().unwrap().sources.len(), 2);
    d.user_vm("app");
    let r = c.rescan(false).unwrap();
    assert!(
        r.changes
            .iter()
            .any(|ch| matches!(&ch.item, ChangeItem::Vm(e) if e.name.as_str() == "app"))
    );
    // Still usable after an error, and the daemon going away is reported.
    assert_eq!(c.ping(vec![]).unwrap(), Vec::<u8>::new());
    d.stop();
    let e = c.ping(vec![]).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let e = vm_catalog::BlockingClient::connect(d.socket()).unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
}
