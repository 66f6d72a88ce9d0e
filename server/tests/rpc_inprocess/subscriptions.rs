//! Subscriptions: snapshot, batches, resumption, lag, cancel, goodbye.

use std::sync::Arc;
use std::time::Duration;

use vm_catalog::{Client, Error, Watch, WatchEvent};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, entry, many, raw, recv_frame};

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
///
/// On tokio's paused clock (the client's stall limit is tokio's): the 3 s
/// below pass only once the daemon has sent what it can and the client's
/// reader waits on the full stream, however loaded the machine is.
#[tokio::test(start_paused = true)]
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
    // Still not read for longer than the client lets a stream stall its
    // reader (1 s; the daemon takes turns between the stream and the ping,
    // so the ping alone may be answered before the stream's queue is full).
    tokio::time::sleep(Duration::from_secs(3)).await;
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
