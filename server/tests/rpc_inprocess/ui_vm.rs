//! A UI VM's listener beside the host socket, on one server: what a VM
//! does draws only on its own budgets.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UnixStream;
use vm_catalog::Client;
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalogd::rpc::Limits;
use vm_catalogd::rpc::ui_vm::{
    Access, Listeners, Owner, Parent, SocketTemplate, UiVmConfig, UiVms,
};

use crate::server::{Server, entry};

/// What a connection as `uid` was told after its `Hello`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    Welcome,
    Error(ErrorCode),
    /// Closed without a word.
    Closed,
}

async fn answer_as(path: &std::path::Path, uid: u32) -> Answer {
    let creds = vm_catalog_tests::peers::Creds::user(uid);
    let s = vm_catalog_tests::peers::connect_async_as(path, &creds).expect("connect");
    let hello = Hello {
        client: "as-user".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    };
    if s.send(&message::hello(&hello).unwrap()).await.is_err() {
        return Answer::Closed;
    }
    let mut buf = vec![0; HANDSHAKE_MAX_FRAME as usize];
    let n = tokio::time::timeout(Duration::from_secs(10), s.recv(&mut buf))
        .await
        .expect("an answer or a close in time");
    let n = match n {
        Ok(n) if n.bytes_read() > 0 => n.bytes_read(),
        _ => return Answer::Closed,
    };
    let f = decode_frame(&buf[..n], HANDSHAKE_MAX_FRAME).unwrap();
    match f.header.kind {
        FrameKind::Welcome => Answer::Welcome,
        _ => {
            let e: ErrorBody = codec::decode(f.body, Compat::Exact).unwrap();
            Answer::Error(e.code)
        }
    }
}

/// The UI VM `ui`'s listener at `<dir>/ui.5`.
fn config(dir: &std::path::Path) -> UiVmConfig {
    UiVmConfig {
        names: vec!["ui".parse().unwrap()],
        port: 5,
        socket: SocketTemplate::parse(&format!("{}/{{name}}.{{port}}", dir.display())).unwrap(),
        vm_dir: dir.to_owned(),
        access: Access {
            mode: 0o600,
            owner: Owner::Unchanged,
            group: None,
        },
        parent: Parent::Existing,
    }
}

/// Regression: a UI VM's flood of connections used the host's refusal
/// slots, so a host uid over its cap was closed without a word (0 of 200
/// `busy` while a VM flooded, 200 of 200 alone).
#[tokio::test]
async fn a_user_over_its_cap_still_gets_busy_while_a_ui_vm_floods() {
    let Some(()) = vm_catalog_tests::require_root("connecting as another uid") else {
        return;
    };
    let limits = Limits {
        max_connections_per_uid: 1,
        max_refusals: 2,
        vm_connections: 1,
        ..Limits::default()
    };
    let srv = Server::start(limits, None).await;
    srv.publish(vec![entry("ui", VmState::Active)]);
    let dir = tempfile::tempdir().unwrap();
    let following = tokio::spawn(UiVms::start(srv.ctx.clone(), config(dir.path())).run());
    let vm_path = dir.path().join("ui.5");

    // Alone, the user over its cap is told `busy`.
    let (_held, w) = crate::server::hello_as(&srv.path, 1001).await;
    w.expect("its one connection");
    assert_eq!(
        answer_as(&srv.path, 1001).await,
        Answer::Error(ErrorCode::Busy)
    );

    // The VM holds its one connection, then floods: connection after
    // connection that never says `Hello`, each refused.
    let _vm = Client::connect_stream(&vm_path).await.unwrap();
    let made = Arc::new(AtomicUsize::new(0));
    let flood = tokio::spawn({
        let (made, vm_path) = (made.clone(), vm_path.clone());
        async move {
            let mut held = Vec::new();
            loop {
                if let Ok(s) = UnixStream::connect(&vm_path).await {
                    held.push(s);
                    made.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() >= 256 {
                    held.clear();
                }
                tokio::task::yield_now().await;
            }
        }
    });
    while made.load(Ordering::Relaxed) < 64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut answers = Vec::new();
    for _ in 0..40 {
        answers.push(answer_as(&srv.path, 1001).await);
    }
    flood.abort();
    assert!(
        answers.iter().all(|a| *a == Answer::Error(ErrorCode::Busy)),
        "{answers:?}"
    );
    srv.ctx.shutdown.cancel();
    following.await.unwrap();
    srv.stop().await;
}

/// A VM's listener is gone the moment it is released (before its
/// `release` hook runs), its connections told why.
#[tokio::test]
async fn a_released_vm_has_no_listener_from_that_moment() {
    let srv = Server::start(Limits::default(), None).await;
    srv.publish(vec![entry("ui", VmState::Active)]);
    let dir = tempfile::tempdir().unwrap();
    let listeners = Listeners::default();
    let following = tokio::spawn(
        UiVms::start_with(srv.ctx.clone(), config(dir.path()), listeners.clone()).run(),
    );
    let vm_path = dir.path().join("ui.5");
    let vm = Client::connect_stream(&vm_path).await.unwrap();
    let mut sub = vm.stream(&Subscribe { since: None }).await.unwrap();
    while !matches!(sub.next().await.unwrap().unwrap(), Event::Synced { .. }) {}
    listeners.release(&"other".parse().unwrap());
    assert!(vm_path.exists(), "another VM's release leaves it");
    listeners.release(&"ui".parse().unwrap());
    assert!(!vm_path.exists(), "gone when release returns");
    while let Some(item) = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("the end in time")
    {
        item.unwrap();
    }
    assert!(
        sub.end().is_some(),
        "its subscription ended with its StreamEnd"
    );
    srv.ctx.shutdown.cancel();
    following.await.unwrap();
    srv.stop().await;
}
