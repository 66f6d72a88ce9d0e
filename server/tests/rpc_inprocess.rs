//! The RPC server in-process (the real `rpc::serve` on a real socket in a
//! temp dir), driven by the real client library and by raw datagrams, with a
//! scripted pipeline behind the `Pipeline` trait. The real daemon binary is
//! tested end to end in `daemon_e2e.rs`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use tokio_util::sync::CancellationToken;
use vm_catalog::{Client, Error, Watch, WatchEvent};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::publish::{Hub, Published};
use vm_catalogd::rescan::{Pipeline, RescanError, RescanResult, Rescans};
use vm_catalogd::rpc::{self, Ctx, Limits, ServerInfo, listener};

/// Publishes whatever the test queued: each rescan takes the next list of
/// entries and publishes it as one generation (every entry `Changed`).
struct Scripted {
    hub: Arc<Hub>,
    next: Arc<Mutex<Vec<Vec<VmEntry>>>>,
}

impl Pipeline for Scripted {
    fn rescan(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        self.run(trigger, false)
    }

    fn dry_run(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        self.run(trigger, true)
    }
}

impl Scripted {
    fn run(&mut self, trigger: RescanTrigger, dry_run: bool) -> Result<RescanResult, RescanError> {
        let current = self.hub.current();
        let vms = self.next.lock().unwrap().pop();
        let before = current.cursor.generation;
        let (changes, generation) = match vms {
            Some(vms) if !dry_run => {
                let generation = before + 1;
                let changes: Vec<Change> = vms
                    .iter()
                    .map(|e| Change {
                        generation,
                        kind: ChangeKind::Changed,
                        item: ChangeItem::Vm(e.clone()),
                    })
                    .collect();
                let mut p = (*current).clone();
                p.cursor.generation = generation;
                p.vms = vms;
                self.hub.publish(p, changes.clone());
                (changes, generation)
            }
            _ => (vec![], before),
        };
        Ok(RescanResult {
            outcome: RescanOutcome {
                trigger,
                dry_run,
                generation_before: before,
                generation,
                changes: changes.len() as u32,
                started_unix_ms: 0,
                duration_us: 0,
                apply: ApplyOutcome {
                    status: ApplyStatus::Disabled,
                    generation,
                    database: None,
                    services: 0,
                    duration_us: 0,
                    message: String::new(),
                },
            },
            changes,
        })
    }
}

struct Server {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    hub: Arc<Hub>,
    next: Arc<Mutex<Vec<Vec<VmEntry>>>>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(limits: Limits, admin_gid: Option<u32>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let hub = Hub::new(Epoch(0xfeed));
        let next = Arc::new(Mutex::new(Vec::new()));
        let (rescans, _worker) = Rescans::spawn(Scripted {
            hub: hub.clone(),
            next: next.clone(),
        });
        let shutdown = CancellationToken::new();
        let info = ServerInfo {
            version: "vm-catalogd test".into(),
            applier: "none",
            features: Features::default(),
            started_unix_ms: 0,
        };
        let ctx = Ctx::new(
            hub.clone(),
            rescans,
            info,
            admin_gid,
            limits,
            shutdown.clone(),
        );
        let (l, bound) = listener::bind(&listener::SocketOptions {
            path: path.clone(),
            mode: 0o666,
            group: None,
        })
        .unwrap();
        let served = tokio::spawn(async move {
            rpc::serve(l, ctx).await;
            drop(bound);
        });
        Server {
            _dir: dir,
            path,
            hub,
            next,
            shutdown,
            served,
        }
    }

    fn publish(&self, vms: Vec<VmEntry>) -> u64 {
        let current = self.hub.current();
        let generation = current.cursor.generation + 1;
        let changes = vms
            .iter()
            .map(|e| Change {
                generation,
                kind: ChangeKind::Added,
                item: ChangeItem::Vm(e.clone()),
            })
            .collect();
        let mut p: Published = (*current).clone();
        p.cursor.generation = generation;
        p.vms = vms;
        self.hub.publish(p, changes);
        generation
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .unwrap()
            .unwrap();
    }
}

fn entry(name: &str, state: VmState) -> VmEntry {
    VmEntry {
        name: name.parse().unwrap(),
        source: "builtin".parse().unwrap(),
        state,
        path: format!("/usr/img/builtin/{name}"),
        view: Some(format!("/run/vm/{name}/config")),
        service: None,
        providers: vec![],
        diagnostics: vec![],
        restart_pending: false,
        shadowed_by: None,
        revision: 1,
    }
}

fn many(n: usize) -> Vec<VmEntry> {
    (0..n)
        .map(|i| entry(&format!("vm-{i:05}"), VmState::Active))
        .collect()
}

use vm_catalog_tests::wire::{connect as raw, recv_frame};

#[tokio::test]
async fn ping_info_get_and_not_found() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(vec![entry("netvm", VmState::Active)]);
    let c = Client::connect(&srv.path).await.unwrap();
    assert_eq!(c.welcome().epoch, Epoch(0xfeed));
    assert_eq!(c.ping(b"hello".to_vec()).await.unwrap(), b"hello");
    let info = c.info().await.unwrap();
    assert_eq!(info.cursor.generation, 1);
    assert_eq!(info.active_vms, 1);
    assert_eq!(info.connections, 1);
    let d = c.get_vm(&"netvm".parse().unwrap()).await.unwrap();
    assert_eq!(d.vm.name.as_str(), "netvm");
    let e = c.get_vm(&"nosuch".parse().unwrap()).await.unwrap_err();
    assert!(e.is_not_found(), "{e}");
    srv.stop().await;
}

#[tokio::test]
async fn list_vms_pages_a_large_catalog_and_filters() {
    let srv = Server::start(Limits::default(), None).await;
    let mut vms = many(3000);
    vms.push(entry("zz-rejected", VmState::Rejected));
    srv.publish(vms);
    let c = Client::connect(&srv.path).await.unwrap();
    let all = c.list_vms(true, None).await.unwrap();
    assert_eq!(all.vms.len(), 3001);
    assert_eq!(all.cursor.generation, 1);
    let active = c.list_vms(false, None).await.unwrap();
    assert_eq!(active.vms.len(), 3000);
    assert!(active.vms.windows(2).all(|w| w[0].name < w[1].name));
    let none = c
        .list_vms(true, Some("user".parse().unwrap()))
        .await
        .unwrap();
    assert!(none.vms.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn concurrent_calls_on_one_connection_are_multiplexed() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(many(500));
    let c = Arc::new(Client::connect(&srv.path).await.unwrap());
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                if i % 2 == 0 {
                    assert_eq!(c.list_vms(false, None).await.unwrap().vms.len(), 500);
                } else {
                    assert_eq!(
                        c.ping(vec![i as u8; 100]).await.unwrap(),
                        vec![i as u8; 100]
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    srv.stop().await;
}

#[tokio::test]
async fn subscribe_snapshot_then_batches_and_resume_without_gap() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(many(3));
    let mut w = Watch::new(&srv.path);
    match w.next().await.unwrap() {
        WatchEvent::Reset {
            reason: ResetReason::Initial,
            changes,
            cursor,
        } => {
            assert_eq!(changes.len(), 3);
            assert_eq!(cursor.generation, 1);
        }
        e => panic!("{e:?}"),
    }
    srv.publish(many(4));
    match w.next().await.unwrap() {
        WatchEvent::Changes {
            generation: 2,
            changes,
        } => assert_eq!(changes.len(), 4),
        e => panic!("{e:?}"),
    }
    // A new subscriber resuming from generation 1 gets only generation 2.
    let since = Cursor {
        epoch: Epoch(0xfeed),
        generation: 1,
    };
    let mut w2 = Watch::since(&srv.path, Some(since));
    assert!(matches!(
        w2.next().await.unwrap(),
        WatchEvent::Changes { generation: 2, .. }
    ));
    assert!(
        matches!(w2.next().await.unwrap(), WatchEvent::Resumed { to, .. } if to.generation == 2)
    );
    srv.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_lags_while_others_get_everything() {
    let srv = Server::start(Limits::default(), None).await;
    // The stalled subscriber: subscribes, then never reads again.
    let (stalled, _) = raw(&srv.path).await;
    stalled
        .send(&message::request(1, &Subscribe { since: None }, MIN_MAX_FRAME).unwrap())
        .await
        .unwrap();
    let mut good = Watch::new(&srv.path);
    assert!(matches!(
        good.next().await.unwrap(),
        WatchEvent::Reset { .. }
    ));
    // 1,000 generations, each changing one VM. Publishing never waits for
    // a subscriber; the test only keeps the reader within its queue bound
    // (a real rescan takes milliseconds, a burst of 1,000 takes none).
    let progress = Arc::new(std::sync::atomic::AtomicU64::new(1));
    let reader = tokio::spawn({
        let progress = progress.clone();
        async move {
            let mut seen = Vec::new();
            while seen.len() < 1000 {
                match good.next().await.unwrap() {
                    WatchEvent::Changes { generation, .. } => {
                        seen.push(generation);
                        progress.store(generation, std::sync::atomic::Ordering::Release);
                    }
                    e => panic!("the reading subscriber must not lag: {e:?}"),
                }
            }
            seen
        }
    });
    for g in 0..1000u64 {
        while g + 1 > progress.load(std::sync::atomic::Ordering::Acquire) + 100 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        srv.publish(vec![entry(&format!("vm-{g}"), VmState::Active)]);
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen,
        (1..=1000).collect::<Vec<u64>>(),
        "every generation, in order"
    );
    // The stalled one now reads: it gets its backlog until the lag point, then
    // a `Reset { Lagged }` and a snapshot of the current generation.
    let mut lagged = false;
    for _ in 0..2000 {
        let (h, body) = recv_frame(&stalled).await;
        assert_eq!(h.call_id, 1);
        match codec::decode::<Event>(&body, Compat::Exact).unwrap() {
            Event::Reset {
                reason: ResetReason::Lagged,
                cursor,
            } => {
                assert_eq!(cursor.generation, 1000);
                lagged = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(lagged, "the stalled subscriber was told it lagged");
    srv.stop().await;
}

#[tokio::test]
async fn garbage_empty_and_oversized_datagrams_close_only_that_connection() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(many(2));
    let good = Client::connect(&srv.path).await.unwrap();
    // Garbage after the handshake: a protocol error, then close.
    let (s, _) = raw(&srv.path).await;
    s.send(b"this is not a frame").await.unwrap();
    let (h, body) = recv_frame(&s).await;
    assert_eq!(h.kind, FrameKind::Error);
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::ProtocolViolation);
    let mut buf = [0u8; 64];
    assert_eq!(s.recv(&mut buf).await.unwrap().bytes_read(), 0, "closed");
    // An empty datagram reads as EOF: the server closes.
    let (s, _) = raw(&srv.path).await;
    s.send(&[]).await.unwrap();
    assert_eq!(s.recv(&mut buf).await.unwrap().bytes_read(), 0);
    // Larger than the negotiated maximum: FrameTooLarge, then close.
    let (s, w) = raw(&srv.path).await;
    s.send(&vec![0u8; w.max_frame as usize + 100])
        .await
        .unwrap();
    let (_, body) = recv_frame(&s).await;
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::FrameTooLarge);
    assert_eq!(e.max_frame, Some(w.max_frame));
    // Garbage instead of Hello.
    let s = UnixSeqpacket::connect(&srv.path).await.unwrap();
    s.send(&[0xff; 40]).await.unwrap();
    let (_, body) = recv_frame(&s).await;
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::ProtocolViolation
    );
    // The well-behaved client never noticed.
    assert_eq!(good.list_vms(false, None).await.unwrap().vms.len(), 2);
    srv.stop().await;
}

#[tokio::test]
async fn bad_calls_fail_alone_and_the_connection_goes_on() {
    let srv = Server::start(Limits::default(), None).await;
    let (s, w) = raw(&srv.path).await;
    // Unknown method 99.
    let f = encode_frame(FrameKind::Request, 99, 5, &(), w.max_frame).unwrap();
    s.send(&f).await.unwrap();
    let (h, body) = recv_frame(&s).await;
    assert_eq!((h.kind, h.call_id), (FrameKind::Error, 5));
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::UnknownMethod
    );
    // GetVm with an invalid name.
    let f = encode_frame(
        FrameKind::Request,
        Method::GetVm.id(),
        6,
        "bad name",
        w.max_frame,
    )
    .unwrap();
    s.send(&f).await.unwrap();
    let (h, body) = recv_frame(&s).await;
    assert_eq!(h.call_id, 6);
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::InvalidRequest
    );
    // Still serving.
    s.send(&message::request(7, &Ping { payload: vec![1] }, w.max_frame).unwrap())
        .await
        .unwrap();
    let (h, _) = recv_frame(&s).await;
    assert_eq!((h.kind, h.call_id), (FrameKind::Reply, 7));
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_never_says_hello_times_out_and_others_are_served() {
    let limits = Limits {
        handshake_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let silent = UnixSeqpacket::connect(&srv.path).await.unwrap();
    let c = Client::connect(&srv.path).await.unwrap();
    c.ping(vec![]).await.unwrap();
    let (h, body) = recv_frame(&silent).await;
    assert_eq!(h.kind, FrameKind::Error);
    assert_eq!(
        codec::decode::<ErrorBody>(&body, Compat::Exact)
            .unwrap()
            .code,
        ErrorCode::Timeout
    );
    srv.stop().await;
}

#[tokio::test]
async fn unsupported_versions_are_refused_with_the_server_range() {
    let srv = Server::start(Limits::default(), None).await;
    let s = UnixSeqpacket::connect(&srv.path).await.unwrap();
    let hello = Hello {
        client: "future".into(),
        versions: VersionRange { min: 7, max: 9 },
        max_frame: DEFAULT_MAX_FRAME,
        features: Features::default(),
    };
    s.send(&message::hello(&hello).unwrap()).await.unwrap();
    let (_, body) = recv_frame(&s).await;
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::UnsupportedVersion);
    assert_eq!(e.supported, Some(SUPPORTED_VERSIONS));
    srv.stop().await;
}

#[tokio::test]
async fn connection_limits_refuse_with_busy() {
    let limits = Limits {
        max_connections_per_uid: 2,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let _a = Client::connect(&srv.path).await.unwrap();
    let _b = Client::connect(&srv.path).await.unwrap();
    let e = Client::connect(&srv.path).await.unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::Busy), "{e}");
    drop(_a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    Client::connect(&srv.path).await.unwrap();
    srv.stop().await;
}

#[tokio::test]
async fn cancel_ends_a_subscription_with_its_last_cursor() {
    let srv = Server::start(Limits::default(), None).await;
    let (s, w) = raw(&srv.path).await;
    s.send(&message::request(3, &Subscribe { since: None }, w.max_frame).unwrap())
        .await
        .unwrap();
    loop {
        let (_, body) = recv_frame(&s).await;
        if matches!(
            codec::decode::<Event>(&body, Compat::Exact).unwrap(),
            Event::Synced { .. }
        ) {
            break;
        }
    }
    s.send(&message::request(4, &Cancel { call_id: 3 }, w.max_frame).unwrap())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let (h, body) = recv_frame(&s).await;
        got.push((h.call_id, h.kind, body));
    }
    got.sort_by_key(|g| g.0);
    // A cancelled subscription ends cleanly, with the last position sent.
    assert_eq!(got[0].1, FrameKind::StreamEnd);
    let end = codec::decode::<SubscriptionEnd>(&got[0].2, Compat::Exact).unwrap();
    assert_eq!(end.cursor.epoch, Epoch(0xfeed));
    assert_eq!(got[1].1, FrameKind::Reply);
    assert!(
        codec::decode::<CancelReply>(&got[1].2, Compat::Exact)
            .unwrap()
            .found
    );
    srv.stop().await;
}

#[tokio::test]
async fn rescan_is_refused_to_non_admins_and_served_to_root() {
    // The test runs as root here; as another user it checks the refusal.
    let srv = Server::start(Limits::default(), None).await;
    srv.next.lock().unwrap().push(many(2));
    let c = Client::connect(&srv.path).await.unwrap();
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let r = c.rescan(false).await.unwrap();
        assert_eq!(r.outcome.generation, 1);
        assert_eq!(r.changes.len(), 2);
    } else {
        let e = c.rescan(false).await.unwrap_err();
        assert!(e.is_permission_denied(), "{e}");
    }
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_says_goodbye_to_subscribers() {
    let srv = Server::start(Limits::default(), None).await;
    let mut w = Watch::new(&srv.path);
    assert!(matches!(w.next().await.unwrap(), WatchEvent::Reset { .. }));
    let stopping = tokio::spawn(srv.stop());
    match w.next().await.unwrap() {
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
    stopping.await.unwrap();
}

/// Regression (review): a subscription that nobody polled stalled the
/// client's reader, so every other call on the same `Client` hung.
#[tokio::test]
async fn an_unread_stream_does_not_block_the_clients_other_calls() {
    let srv = Server::start(Limits::default(), None).await;
    let c = Client::connect(&srv.path).await.unwrap();
    let mut stream = c.subscribe(None).await.unwrap();
    while !matches!(stream.next().await, Some(Ok(Event::Synced { .. }))) {}
    // Far more frames than the stream's queue holds, while it is not read.
    for g in 0..200 {
        srv.publish(vec![entry(&format!("vm-{g}"), VmState::Active)]);
    }
    let pong = tokio::time::timeout(Duration::from_secs(10), c.ping(vec![7])).await;
    assert_eq!(pong.expect("ping answered in time").unwrap(), [7]);
    // The stream itself ends with a clear error once its queue is drained.
    let mut ended = None;
    let mut n = 0;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap_or_else(|_| panic!("the stream hangs after {n} items"))
    {
        n += 1;
        if let Err(e) = item {
            ended = Some(e);
            break;
        }
    }
    assert!(matches!(ended, Some(Error::Overflow)), "{ended:?}");
    srv.stop().await;
}

/// Regression (review): a stream that outlived its `Client` waited forever.
#[tokio::test]
async fn a_stream_that_outlives_its_client_ends() {
    let srv = Server::start(Limits::default(), None).await;
    let c = Client::connect(&srv.path).await.unwrap();
    let mut stream = c.subscribe(None).await.unwrap();
    drop(c);
    let mut ended = false;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("the stream ends instead of hanging")
    {
        if item.is_err() {
            ended = true;
            break;
        }
    }
    assert!(ended);
    srv.stop().await;
}

/// Regression (review): a client that stopped reading held the read loop
/// of its connection (and with it the daemon's shutdown) forever.
#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_off_and_shutdown_is_not_held_up() {
    let limits = Limits {
        send_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let (s, w) = raw(&srv.path).await;
    // Pings with large payloads, never read: the socket's queue fills.
    let payload = vec![0u8; w.max_frame as usize - 200];
    for id in 1..=64u32 {
        let f = message::request(
            id,
            &Ping {
                payload: payload.clone(),
            },
            w.max_frame,
        )
        .unwrap();
        if tokio::time::timeout(Duration::from_millis(200), s.send(&f))
            .await
            .is_err()
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Others are still served, and the daemon stops promptly.
    let c = Client::connect(&srv.path).await.unwrap();
    c.ping(vec![1]).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), srv.stop())
        .await
        .expect("stopped in time");
}

/// Calls beyond the per-connection limit get `Busy` (the limit is checked
/// before a task is made for the call).
#[tokio::test]
async fn calls_beyond_the_in_flight_limit_get_busy() {
    let srv = Server::start(Limits::default(), None).await;
    let (s, w) = raw(&srv.path).await;
    for id in 1..=40u32 {
        s.send(&message::request(id, &Subscribe { since: None }, w.max_frame).unwrap())
            .await
            .unwrap();
    }
    let mut busy = 0;
    for _ in 0..200 {
        let (h, body) = recv_frame(&s).await;
        if h.kind == FrameKind::Error {
            assert_eq!(
                codec::decode::<ErrorBody>(&body, Compat::Exact)
                    .unwrap()
                    .code,
                ErrorCode::Busy
            );
            busy += 1;
            if busy == 8 {
                break;
            }
        }
    }
    assert_eq!(busy, 8, "40 subscriptions, 32 allowed");
    srv.stop().await;
}

/// Regression (issue 13): the in-flight limit was enforced twice, and the
/// second one (tower's, over every call) refused the quick calls too once
/// the streams held every slot, so a client at the limit could not even
/// `Cancel` one of its subscriptions.
#[tokio::test]
async fn at_the_in_flight_limit_quick_calls_and_cancel_are_still_served() {
    let srv = Server::start(Limits::default(), None).await;
    let (s, w) = raw(&srv.path).await;
    let limit = Limits::default().calls_per_connection as u32;
    for id in 1..=limit {
        s.send(&message::request(id, &Subscribe { since: None }, w.max_frame).unwrap())
            .await
            .unwrap();
    }
    let mut synced = 0;
    while synced < limit {
        let (h, body) = recv_frame(&s).await;
        assert_eq!(h.kind, FrameKind::StreamItem, "call {}", h.call_id);
        if matches!(
            codec::decode::<Event>(&body, Compat::Exact).unwrap(),
            Event::Synced { .. }
        ) {
            synced += 1;
        }
    }
    let ping = limit + 1;
    s.send(&message::request(ping, &Ping { payload: vec![9] }, w.max_frame).unwrap())
        .await
        .unwrap();
    let (h, body) = recv_frame(&s).await;
    assert_eq!((h.kind, h.call_id), (FrameKind::Reply, ping));
    assert_eq!(
        codec::decode::<Pong>(&body, Compat::Exact).unwrap().payload,
        [9]
    );
    let cancel = limit + 2;
    s.send(&message::request(cancel, &Cancel { call_id: 1 }, w.max_frame).unwrap())
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let (h, _) = recv_frame(&s).await;
        got.push((h.call_id, h.kind));
    }
    got.sort_by_key(|g| g.0);
    assert_eq!(got, [(1, FrameKind::StreamEnd), (cancel, FrameKind::Reply)]);
    srv.stop().await;
}
