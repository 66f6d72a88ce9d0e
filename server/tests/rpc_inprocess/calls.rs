//! Calls: answers, errors for one call only, the in-flight limit.

use std::sync::Arc;
use std::time::Duration;

use vm_catalog::Client;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, entry, many, raw, recv_frame};

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

/// A `Rescan` that takes longer than its deadline is answered `timeout`
/// exactly at the deadline (tokio's, on its paused clock), the connection
/// stays, and the rescan itself completes.
#[tokio::test(start_paused = true)]
async fn a_rescan_past_its_deadline_is_answered_timeout_and_still_completes() {
    let Some(()) = vm_catalog_tests::require_root("Rescan is root's") else {
        return;
    };
    const DEADLINE: Duration = Duration::from_secs(5);
    let limits = Limits {
        rescan_timeout: DEADLINE,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    srv.next.lock().unwrap().push(many(2));
    let c = Client::connect(&srv.path).await.unwrap();
    let held = srv.hold.lock().await;
    let asked = tokio::time::Instant::now();
    let e = c.rescan(false).await.unwrap_err();
    assert_eq!(asked.elapsed(), DEADLINE, "answered at the deadline");
    assert_eq!(e.code(), Some(ErrorCode::Timeout), "{e}");
    drop(held);
    assert_eq!(c.ping(vec![1]).await.unwrap(), [1], "the connection stays");
    // The rescan goes on, on its own thread (waited for off the paused
    // clock).
    let hub = srv.ctx.hub.clone();
    let published = tokio::task::spawn_blocking(move || {
        vm_catalog_tests::s6::wait_for(Duration::from_secs(60), || {
            hub.current().cursor.generation == 1
        })
    });
    assert!(published.await.unwrap(), "the rescan completed");
    srv.stop().await;
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
