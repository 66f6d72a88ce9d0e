//! What peers that ask and never read can make the daemon hold (issue 12,
//! item 3): one frame per connection at a time, all of them within the
//! reply budget, with a reserve for root and a fair share per user, given
//! back when those peers go.

use std::time::Duration;

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog::Client;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;

use crate::server::{Server, hello_as, many, raw, recv_frame};

/// Bytes queued for `s` to read (`FIONREAD`: every datagram).
fn queued(s: &UnixSeqpacket) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a valid pointer.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    assert_eq!(rc, 0);
    n as usize
}

/// Sends `n` unread `ListVms { include_inactive }` on `s`.
async fn ask(s: &UnixSeqpacket, max_frame: u32, n: u32) {
    for id in 1..=n {
        let all = ListVms {
            include_inactive: true,
            source: None,
        };
        s.send(&message::request(id, &all, max_frame).unwrap())
            .await
            .unwrap();
    }
}

/// Waits until `f` gives the same value for half a second (at most 20 s).
///
/// Every test here runs on tokio's paused clock, where a sleep ends only
/// once every task waits (the server blocked on full sockets, or done):
/// half a second of the same value is the server having nothing left to
/// do, not a guess that a loaded machine can miss.
async fn settled(mut f: impl FnMut() -> usize) -> usize {
    let mut last = f();
    let mut same = 0;
    for _ in 0..400 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = f();
        same = if now == last { same + 1 } else { 0 };
        last = now;
        if same == 10 {
            break;
        }
    }
    last
}

async fn all_given_back(srv: &Server) {
    for _ in 0..1000 {
        if srv.ctx.replies.used() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} reply bytes still held", srv.ctx.replies.used());
}

/// Regression (issue 12, item 3): every unread `ListVms` held its own
/// frame, its own page buffer and its own list of the entries it chose, so
/// 32 of them on one connection held 32 times that.
#[tokio::test(start_paused = true)]
async fn unread_list_vms_on_one_connection_hold_one_frame_at_a_time() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(many(3000));
    let (s, w) = raw(&srv.path).await;
    srv.ctx.replies.take_peak();
    ask(&s, w.max_frame, 32).await;
    let q = settled(|| queued(&s)).await;
    assert!(q > 4 * w.max_frame as usize, "the socket filled: {q} bytes");
    assert!(srv.ctx.replies.used() > 0, "a frame waits for the peer");
    let peak = srv.ctx.replies.take_peak();
    assert!(
        peak <= u64::from(w.max_frame),
        "{peak} bytes held at once: more than one frame of {}",
        w.max_frame
    );
    drop(s);
    all_given_back(&srv).await;
    srv.stop().await;
}

/// Regression (issue 12, item 3): 8 uids x 32 connections x 32 unread
/// `ListVms` took the daemon from 120 MB to 2.26 GB: nothing bounded the
/// replies nobody reads. Now users hold at most their part of the budget,
/// each its fair share, and root and other users are still served.
#[tokio::test(start_paused = true)]
async fn users_that_never_read_stay_within_the_budget_and_others_are_served() {
    let Some(()) = vm_catalog_tests::require_root("connecting as other uids") else {
        return;
    };
    let limits = Limits {
        reply_budget: 256 << 10,
        reply_reserve: 64 << 10,
        reply_budget_per_uid: 128 << 10,
        send_timeout: Duration::from_secs(60),
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    srv.publish(many(3000));
    let share = srv.ctx.replies.share();
    let mut attackers = Vec::new();
    for uid in 1001..=1004 {
        for _ in 0..4 {
            let (s, w) = hello_as(&srv.path, uid).await;
            ask(&s, w.unwrap().max_frame, 8).await;
            attackers.push(s);
        }
    }
    let held = settled(|| srv.ctx.replies.used() as usize).await as u64;
    // 16 connections would hold 256 KiB of 16 KiB frames; users get 192.
    assert!(held > share.users() / 2, "the attackers hold {held}");
    assert!(held <= share.users(), "{held} of {}", share.users());
    for uid in 1001..=1004 {
        assert!(srv.ctx.replies.held_by(uid) <= share.per_user);
    }
    // Root, from the reserve, with frames of 64 KiB.
    let root = Client::connect(&srv.path).await.unwrap();
    assert_eq!(root.list_vms(true, None).await.unwrap().vms.len(), 3000);
    // Another user, from what the fair share left free.
    let (s, w) = hello_as(&srv.path, 2000).await;
    ask(&s, w.unwrap().max_frame, 1).await;
    let mut total = None;
    while total.is_none() {
        let (h, body) = recv_frame(&s).await;
        match h.kind {
            FrameKind::StreamItem => {}
            FrameKind::StreamEnd => {
                total = Some(
                    codec::decode::<ListEnd>(&body, Compat::Exact)
                        .unwrap()
                        .total,
                );
            }
            k => panic!("{k:?}"),
        }
    }
    assert_eq!(total, Some(3000));
    // Released when those peers go.
    drop(attackers);
    all_given_back(&srv).await;
    srv.stop().await;
}

/// Over the budget, a frame waits (here, until the peer that holds the
/// budget is cut off at the send deadline) instead of failing at once or
/// being built anyway.
#[tokio::test(start_paused = true)]
async fn a_frame_over_the_budget_waits_for_a_stalled_peer_to_be_cut_off() {
    let Some(()) = vm_catalog_tests::require_root("connecting as other uids") else {
        return;
    };
    let frame = u64::from(MIN_MAX_FRAME);
    let limits = Limits {
        max_frame: MIN_MAX_FRAME,
        reply_budget: 2 * frame,
        reply_reserve: frame,
        reply_budget_per_uid: frame,
        send_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    srv.publish(many(3000));
    assert_eq!(
        srv.ctx.replies.share().users(),
        frame,
        "one frame for users"
    );
    let (stalled, w) = hello_as(&srv.path, 1001).await;
    ask(&stalled, w.unwrap().max_frame, 1).await;
    settled(|| queued(&stalled)).await;
    assert!(
        srv.ctx.replies.held_by(1001) > 0,
        "it holds the users' part"
    );
    let (s, w) = hello_as(&srv.path, 1002).await;
    ask(&s, w.unwrap().max_frame, 1).await;
    loop {
        let (h, body) = recv_frame(&s).await;
        match h.kind {
            FrameKind::StreamItem => {}
            FrameKind::StreamEnd => {
                let end: ListEnd = codec::decode(&body, Compat::Exact).unwrap();
                assert_eq!(end.total, 3000);
                break;
            }
            k => panic!(
                "{k:?}: {:?}",
                codec::decode::<ErrorBody>(&body, Compat::Exact)
            ),
        }
    }
    assert_eq!(
        srv.ctx.replies.held_by(1001),
        0,
        "the stalled peer was cut off"
    );
    srv.stop().await;
}
