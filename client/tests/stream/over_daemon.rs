//! Both clients and the CLI over a stream to the real daemon (through the
//! relay that stands in for its stream listener).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use vm_catalog::{BlockingClient, Client, Endpoint, Watch, WatchEvent};
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

use super::in_time;
use super::relay::Relay;

/// A daemon with two VMs, and a relay in front of it.
fn daemon() -> (TestDaemon, Relay) {
    let mut d = TestDaemon::new(workspace_bin("vm-catalogd"));
    d.arg("--no-watch");
    d.builtin_vm("netvm");
    d.user_vm("appvm");
    d.start().unwrap();
    let relay = Relay::start(&d.socket(), &d.tree().join("vsock_22083"));
    (d, relay)
}

async fn next(w: &mut Watch) -> WatchEvent {
    in_time("a watch event", w.next())
        .await
        .expect("no fatal watch error")
}

#[tokio::test]
async fn every_call_over_a_stream_answers_as_over_seqpacket() {
    let (d, relay) = daemon();
    let seq = Client::connect(d.socket()).await.unwrap();
    let stream = Client::connect_stream(relay.path()).await.unwrap();
    assert_eq!(stream.endpoint(), &Endpoint::Stream(relay.path().into()));
    assert_eq!(stream.welcome().epoch, seq.welcome().epoch);
    assert_eq!(
        stream.list_vms(true, None).await.unwrap(),
        seq.list_vms(true, None).await.unwrap()
    );
    let appvm = "appvm".parse().unwrap();
    assert_eq!(
        stream.get_vm(&appvm).await.unwrap(),
        seq.get_vm(&appvm).await.unwrap()
    );
    assert!(
        stream
            .get_vm(&"nope".parse().unwrap())
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert_eq!(
        stream.sources().await.unwrap(),
        seq.sources().await.unwrap()
    );
    assert_eq!(
        stream.info().await.unwrap().cursor,
        seq.info().await.unwrap().cursor
    );
    // Frames of every size, also larger than one read.
    for len in [0, 1, 15, 16, 17, 4096, 20_000, 65_000] {
        let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
        assert_eq!(
            stream.ping(payload.clone()).await.unwrap(),
            payload,
            "{len}"
        );
    }
}

#[tokio::test]
async fn concurrent_calls_on_one_stream_never_interleave_their_frames() {
    let (_d, relay) = daemon();
    let client = Arc::new(Client::connect_stream(relay.path()).await.unwrap());
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..32u8 {
        let client = client.clone();
        calls.spawn(async move {
            let payload = vec![i; 50_000];
            (client.ping(payload.clone()).await.unwrap() == payload, i)
        });
    }
    let mut done = 0;
    while let Some(r) = in_time("the pings", calls.join_next()).await {
        let (same, i) = r.unwrap();
        assert!(same, "ping {i} came back changed");
        done += 1;
    }
    assert_eq!(done, 32);
}

#[test]
fn the_blocking_client_over_a_stream() {
    let (d, relay) = daemon();
    let mut seq = BlockingClient::connect(d.socket()).unwrap();
    let mut stream = BlockingClient::connect_stream(relay.path()).unwrap();
    assert_eq!(
        stream.list_vms(false, None).unwrap(),
        seq.list_vms(false, None).unwrap()
    );
    assert!(
        stream
            .get_vm(&"nope".parse().unwrap())
            .unwrap_err()
            .is_not_found()
    );
    let payload = vec![7; 65_000];
    assert_eq!(stream.ping(payload.clone()).unwrap(), payload);
    assert_eq!(stream.rescan(true).unwrap().changes, []);
}

#[tokio::test]
async fn a_watch_over_a_stream_resumes_after_its_connection_breaks() {
    let (d, relay) = daemon();
    let admin = Client::connect(d.socket()).await.unwrap();
    let mut w = Watch::new(Endpoint::Stream(relay.path().into()));
    let cursor = match next(&mut w).await {
        WatchEvent::Reset { cursor, .. } => cursor,
        e => panic!("{e:?}"),
    };
    assert_eq!(w.mirror().active().count(), 2);
    // The guest's connection breaks; a generation passes meanwhile.
    relay.cut();
    assert!(matches!(
        next(&mut w).await,
        WatchEvent::Disconnected { .. }
    ));
    d.user_vm("late");
    admin.rescan(false).await.unwrap();
    let mut replayed = Vec::new();
    loop {
        match next(&mut w).await {
            WatchEvent::Changes { generation, .. } => replayed.push(generation),
            WatchEvent::Resumed { from, to } => {
                assert_eq!(from, cursor);
                assert_eq!(to.generation, cursor.generation + 1);
                break;
            }
            // The daemon may not have been reached on the first retry.
            WatchEvent::Disconnected { .. } => {}
            e => panic!("{e:?}"),
        }
    }
    assert_eq!(replayed, [cursor.generation + 1]);
    assert!(w.mirror().get("late").is_some());
    assert_eq!(relay.connections(), 1, "one reconnection");
}

#[test]
fn the_cli_watches_over_a_stream_and_resumes() {
    let (d, relay) = daemon();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm-catalog"))
        .arg("--stream")
        .arg(relay.path())
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let first = wait_line(&rx, |v| v["event"] == "reset");
    assert_eq!(first["reason"], "initial");
    wait_line(&rx, |v| v["event"] == "added" && v["name"] == "appvm");
    relay.cut();
    wait_line(&rx, |v| v["event"] == "disconnected");
    d.user_vm("late");
    let mut admin = BlockingClient::connect(d.socket()).unwrap();
    admin.rescan(false).unwrap();
    wait_line(&rx, |v| v["event"] == "added" && v["name"] == "late");
    let resumed = wait_line(&rx, |v| v["event"] == "resumed");
    assert_eq!(resumed["from"], first["generation"]);
    let _ = child.kill();
    let _ = child.wait();
}

fn lines(out: std::process::ChildStdout) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            let v = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
            if tx.send(v).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line (within 30 s: a guard against a hang) that satisfies
/// `want`.
fn wait_line(rx: &mpsc::Receiver<Value>, want: impl Fn(&Value) -> bool) -> Value {
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("a line in time");
        if want(&v) {
            return v;
        }
    }
}
