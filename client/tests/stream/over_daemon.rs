//! Both clients and the CLI over a stream to the real daemon, on its
//! listener for the UI VM `ui` (the test acts as the VMM).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use vm_catalog::{BlockingClient, Client, Endpoint, Watch, WatchEvent};
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};

use super::in_time;

/// A daemon with two VMs and the UI VM `ui`, and the path of its listener.
fn daemon() -> (TestDaemon, Listener) {
    let mut d = TestDaemon::new(workspace_bin("vm-catalogd"));
    d.arg("--no-watch").arg("--ui-vm").arg("ui");
    d.builtin_vm("netvm");
    d.user_vm("appvm");
    d.user_vm("ui");
    d.start().unwrap();
    let path = d.vm_dir().join("ui/vsock_22083");
    (d, Listener(path))
}

/// The UI VM's listener.
struct Listener(std::path::PathBuf);

impl Listener {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

/// Takes the UI VM out of the catalog (its connections end) and back.
fn out_and_back(d: &TestDaemon, admin: &mut BlockingClient, meanwhile: impl FnOnce()) {
    let ui = d.user().join("ui");
    let away = d.tree().join("ui-away");
    std::fs::rename(&ui, &away).unwrap();
    admin.rescan(false).unwrap();
    meanwhile();
    std::fs::rename(&away, &ui).unwrap();
    admin.rescan(false).unwrap();
}

async fn next(w: &mut Watch) -> WatchEvent {
    in_time("a watch event", w.next())
        .await
        .expect("no fatal watch error")
}

#[tokio::test]
async fn every_call_over_a_stream_answers_as_over_seqpacket() {
    let (d, listener) = daemon();
    let seq = Client::connect(d.socket()).await.unwrap();
    let stream = Client::connect_stream(listener.path()).await.unwrap();
    assert_eq!(stream.endpoint(), &Endpoint::Stream(listener.path().into()));
    assert_eq!(stream.welcome().epoch, seq.welcome().epoch);
    // The same answers, less the host paths a VM does not see.
    assert_eq!(
        stream.list_vms(true, None).await.unwrap(),
        vm_sees_list(seq.list_vms(true, None).await.unwrap())
    );
    let appvm = "appvm".parse().unwrap();
    let mut detail = seq.get_vm(&appvm).await.unwrap();
    detail.vm = vm_sees(detail.vm);
    detail.others = detail.others.into_iter().map(vm_sees).collect();
    assert_eq!(stream.get_vm(&appvm).await.unwrap(), detail);
    assert!(
        stream
            .get_vm(&"nope".parse().unwrap())
            .await
            .unwrap_err()
            .is_not_found()
    );
    let mut sources = seq.sources().await.unwrap();
    for s in &mut sources.sources {
        for d in &mut s.diagnostics {
            // About the source's own directory: "." to a VM.
            assert_eq!(d.path, s.path);
            d.path = ".".into();
            // Its message is the code's name: no host text.
            d.message = d.code.name().into();
        }
        s.path = String::new();
        s.device = None;
    }
    assert_eq!(stream.sources().await.unwrap(), sources);
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
    let (_d, listener) = daemon();
    let client = Arc::new(Client::connect_stream(listener.path()).await.unwrap());
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
    let (d, listener) = daemon();
    let mut seq = BlockingClient::connect(d.socket()).unwrap();
    let mut stream = BlockingClient::connect_stream(listener.path()).unwrap();
    assert_eq!(
        stream.list_vms(false, None).unwrap(),
        vm_sees_list(seq.list_vms(false, None).unwrap())
    );
    assert!(
        stream
            .get_vm(&"nope".parse().unwrap())
            .unwrap_err()
            .is_not_found()
    );
    let payload = vec![7; 65_000];
    assert_eq!(stream.ping(payload.clone()).unwrap(), payload);
    assert!(stream.rescan(true).unwrap_err().is_permission_denied());
    assert_eq!(seq.rescan(true).unwrap().changes, []);
}

/// An entry as a UI VM sees it (these have no diagnostics).
fn vm_sees(mut e: vm_catalog_protocol::VmEntry) -> vm_catalog_protocol::VmEntry {
    assert!(e.diagnostics.is_empty());
    e.path = String::new();
    e.view = None;
    e
}

fn vm_sees_list(mut l: vm_catalog::VmList) -> vm_catalog::VmList {
    l.vms = l.vms.into_iter().map(vm_sees).collect();
    l
}

#[tokio::test]
async fn a_watch_over_a_stream_resumes_after_its_connection_breaks() {
    let (d, listener) = daemon();
    let admin = Client::connect(d.socket()).await.unwrap();
    let mut w = Watch::new(Endpoint::Stream(listener.path().into()));

    let cursor = match next(&mut w).await {
        WatchEvent::Reset { cursor, .. } => cursor,
        e => panic!("{e:?}"),
    };
    assert_eq!(w.mirror().active().count(), 3);
    // The UI VM leaves the catalog (its connection ends) and comes back;
    // a VM is added meanwhile.
    drop(admin);
    let mut admin = BlockingClient::connect(d.socket()).unwrap();
    out_and_back(&d, &mut admin, || drop(d.user_vm("late")));
    let mut replayed = Vec::new();
    loop {
        match next(&mut w).await {
            WatchEvent::Changes { generation, .. } => replayed.push(generation),
            WatchEvent::Resumed { from, to } => {
                assert_eq!(from.epoch, cursor.epoch);
                assert!(to.generation > from.generation);
                break;
            }
            // Not reachable while the VM was out.
            WatchEvent::Disconnected { .. } => {}
            e => panic!("{e:?}"),
        }
    }
    assert!(!replayed.is_empty());
    assert!(w.mirror().get("late").is_some());
    assert!(w.mirror().get("ui").is_some());
}

#[test]
fn the_cli_watches_over_a_stream_and_resumes() {
    let (d, listener) = daemon();
    let mut child = Command::new(env!("CARGO_BIN_EXE_vm-catalog"))
        .arg("--stream")
        .arg(listener.path())
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(child.stdout.take().unwrap());
    let first = wait_line(&rx, |v| v["event"] == "reset");
    assert_eq!(first["reason"], "initial");
    wait_line(&rx, |v| v["event"] == "added" && v["name"] == "appvm");
    let mut admin = BlockingClient::connect(d.socket()).unwrap();
    out_and_back(&d, &mut admin, || drop(d.user_vm("late")));
    wait_line(&rx, |v| v["event"] == "added" && v["name"] == "late");
    let resumed = wait_line(&rx, |v| v["event"] == "resumed");
    assert!(resumed["from"].as_u64() >= first["generation"].as_u64());
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
            .recv_timeout(Duration::from_secs(60))
            .expect("a line in time");
        if want(&v) {
            return v;
        }
    }
}
