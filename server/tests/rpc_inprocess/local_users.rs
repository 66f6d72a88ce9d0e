//! Other local users against root and against each other: connection
//! admission by uid, and the idle timeout (issue 12, item 2).

use std::time::Duration;

use vm_catalog::Client;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, entry, hello_as, raw, recv_frame};

/// Regression (issue 12, item 2): 8 uids with 32 idle connections each
/// (256) filled the table, and root's `status` and `list` got `busy: too
/// many connections`.
#[tokio::test]
async fn eight_uids_of_32_idle_connections_no_longer_lock_root_out() {
    let Some(()) = vm_catalog_tests::require_root("connecting as other uids") else {
        return;
    };
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(vec![entry("netvm", VmState::Active)]);
    let mut held = Vec::new();
    let mut refused = 0;
    for uid in 1001..=1008 {
        for _ in 0..32 {
            match hello_as(&srv.path, uid).await {
                (s, Ok(_)) => held.push(s),
                (_, Err(e)) => {
                    assert_eq!(e.code, ErrorCode::Busy, "{e:?}");
                    refused += 1;
                }
            }
        }
    }
    assert_eq!(
        (held.len(), refused),
        (206, 50),
        "each uid had its fair share, one after the other (18 slots stay free: no eviction)"
    );
    // Another user still gets in, and root many times over.
    let (_other, w) = hello_as(&srv.path, 2000).await;
    w.expect("a ninth user gets a slot");
    let mut root = Vec::new();
    for _ in 0..32 {
        root.push(Client::connect(&srv.path).await.expect("root gets in"));
    }
    let info = root[0].info().await.unwrap();
    assert_eq!(info.connections, 206 + 1 + 32);
    assert_eq!(root[31].list_vms(false, None).await.unwrap().vms.len(), 1);
    srv.stop().await;
}

/// Regression (issue 12, item 2): there was no idle timeout after the
/// handshake, so idle connections held their slots for good.
///
/// On tokio's paused clock (the timeout is tokio's): time moves only when
/// every task waits, so the handshakes and the subscription take no time
/// however loaded the machine is, and the `Goodbye` comes exactly at the
/// timeout.
#[tokio::test(start_paused = true)]
async fn an_idle_connection_is_closed_with_a_goodbye_but_a_busy_one_is_not() {
    const IDLE: Duration = Duration::from_millis(300);
    let limits = Limits {
        idle_timeout: IDLE,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    let (idle, _) = raw(&srv.path).await;
    let welcomed = tokio::time::Instant::now();
    // A subscriber is not idle, however long nothing happens.
    let (sub, w) = raw(&srv.path).await;
    sub.send(&message::request(1, &Subscribe { since: None }, w.max_frame).unwrap())
        .await
        .unwrap();
    loop {
        let (_, body) = recv_frame(&sub).await;
        let e: Event = codec::decode(&body, Compat::Exact).unwrap();
        if matches!(e, Event::Synced { .. }) {
            break;
        }
    }
    let (h, body) = recv_frame(&idle).await;
    assert_eq!(h.kind, FrameKind::Goodbye);
    assert_eq!(welcomed.elapsed(), IDLE, "closed exactly at the timeout");
    let bye: Goodbye = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(bye.reason, "idle: no call for too long");
    let mut buf = [0u8; 64];
    assert_eq!(idle.recv(&mut buf).await.unwrap().bytes_read(), 0, "closed");
    // Nor is one that keeps calling, more often than the timeout (for
    // longer than the subscriber has been waiting in all).
    let (pinger, w) = raw(&srv.path).await;
    for id in 1..=8u32 {
        pinger
            .send(&message::request(id, &Ping { payload: vec![] }, w.max_frame).unwrap())
            .await
            .unwrap();
        let (h, _) = recv_frame(&pinger).await;
        assert_eq!((h.kind, h.call_id), (FrameKind::Reply, id));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    srv.publish(vec![entry("late", VmState::Active)]);
    let (h, body) = recv_frame(&sub).await;
    assert_eq!(h.kind, FrameKind::StreamItem);
    assert!(matches!(
        codec::decode::<Event>(&body, Compat::Exact).unwrap(),
        Event::Batch { .. }
    ));
    srv.stop().await;
}
