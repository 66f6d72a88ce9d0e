//! UI VMs on the real daemon, the test acting as the VMM: a Unix stream
//! connection to the listener `<vm-dir>/<NAME>/vsock_<PORT>` is exactly
//! what cloud-hypervisor connects there for a guest's vsock connection.
//! (`AF_VSOCK` itself is never connected here.)

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use vm_catalog::Endpoint;
use vm_catalog_protocol::stream::StreamFramer;

use super::*;

/// A daemon serving `ui` as a UI VM, with `netvm` (built-in) and `appvm`
/// (user) beside it.
fn ui_daemon() -> TestDaemon {
    let mut d = daemon();
    d.arg("--no-watch").arg("--ui-vm").arg("ui");
    d.builtin_vm("netvm");
    d.user_vm("appvm");
    d.user_vm("ui");
    d
}

/// The listener of VM `name` on the default port.
fn listener(d: &TestDaemon, name: &str) -> PathBuf {
    d.vm_dir()
        .join(name)
        .join(format!("vsock_{}", stream::DEFAULT_VSOCK_PORT))
}

/// A raw stream connection after its handshake.
async fn raw_stream(path: &Path) -> (UnixStream, StreamFramer) {
    let mut s = UnixStream::connect(path).await.expect("connect");
    let hello = Hello {
        client: "vmm".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    };
    s.write_all(&message::hello(&hello).unwrap()).await.unwrap();
    let mut framer = StreamFramer::new(LIMIT_MAX_FRAME);
    let (h, _) = read_frame(&mut s, &mut framer).await.expect("a Welcome");
    assert_eq!(h.kind, FrameKind::Welcome);
    (s, framer)
}

/// The next frame on a stream, or `None` at its end (at most 10 s).
async fn read_frame(s: &mut UnixStream, framer: &mut StreamFramer) -> Option<(Header, Vec<u8>)> {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(f) = framer.next_frame().expect("frames") {
                let f = decode_frame(f, LIMIT_MAX_FRAME).expect("a frame");
                return Some((f.header, f.body.to_vec()));
            }
            let n = s.read(framer.space()).await.unwrap_or(0);
            if n == 0 {
                return None;
            }
            framer.filled(n);
        }
    })
    .await
    .expect("a frame or the end in time")
}

#[tokio::test]
async fn a_ui_vm_lists_subscribes_and_resumes_over_its_listener() {
    let mut d = ui_daemon();
    d.start().unwrap();
    let host = Client::connect(d.socket()).await.unwrap();
    let vm = Client::connect_stream(listener(&d, "ui")).await.unwrap();
    assert_eq!(vm.welcome().epoch, host.welcome().epoch);
    let seen: Vec<String> = vm
        .list_vms(true, None)
        .await
        .unwrap()
        .vms
        .iter()
        .map(|e| e.name.to_string())
        .collect();
    assert_eq!(seen, ["appvm", "netvm", "ui"]);
    assert_eq!(vm.ping(vec![9; 20_000]).await.unwrap(), vec![9; 20_000]);

    let mut w = Watch::new(Endpoint::Stream(listener(&d, "ui")));
    let cursor = match next(&mut w).await {
        WatchEvent::Reset { cursor, .. } => cursor,
        e => panic!("{e:?}"),
    };
    drop(w);
    d.user_vm("late");
    host.rescan(false).await.unwrap();
    // A new connection resumes from where the last one was.
    let mut sub = vm
        .stream(&Subscribe {
            since: Some(cursor),
        })
        .await
        .unwrap();
    match sub.next().await.unwrap().unwrap() {
        Event::Resumed { from } => assert_eq!(from, cursor),
        e => panic!("{e:?}"),
    }
    match sub.next().await.unwrap().unwrap() {
        Event::Batch {
            generation,
            changes,
            ..
        } => {
            assert_eq!(generation, cursor.generation + 1);
            assert!(kinds(&changes).contains(&("late".into(), ChangeKind::Added)));
        }
        e => panic!("{e:?}"),
    }
}

#[tokio::test]
async fn rescan_from_a_ui_vm_is_permission_denied_and_its_connection_stays() {
    let mut d = ui_daemon();
    d.start().unwrap();
    let vm = Client::connect_stream(listener(&d, "ui")).await.unwrap();
    let e = vm.rescan(false).await.unwrap_err();
    assert!(e.is_permission_denied(), "{e}");
    assert!(vm.rescan(true).await.unwrap_err().is_permission_denied());
    assert_eq!(vm.ping(vec![1]).await.unwrap(), [1]);
}

#[tokio::test]
async fn garbage_on_a_ui_vm_stream_closes_that_stream_only() {
    let mut d = ui_daemon();
    d.start().unwrap();
    let other = Client::connect_stream(listener(&d, "ui")).await.unwrap();
    let host = Client::connect(d.socket()).await.unwrap();
    let (mut s, mut framer) = raw_stream(&listener(&d, "ui")).await;
    s.write_all(&[0x47; 40]).await.unwrap();
    let (h, body) = read_frame(&mut s, &mut framer).await.expect("an Error");
    assert_eq!((h.kind, h.call_id), (FrameKind::Error, 0));
    let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
    assert_eq!(e.code, ErrorCode::ProtocolViolation);
    assert!(read_frame(&mut s, &mut framer).await.is_none(), "closed");
    // A frame cut by the end of its stream: that stream only, no answer.
    let (mut s, _) = raw_stream(&listener(&d, "ui")).await;
    let ping = message::request(
        1,
        &Ping {
            payload: vec![5; 100],
        },
        MIN_MAX_FRAME,
    )
    .unwrap();
    s.write_all(&ping[..50]).await.unwrap();
    drop(s);
    assert_eq!(other.ping(vec![2]).await.unwrap(), [2]);
    assert_eq!(host.ping(vec![3]).await.unwrap(), [3]);
}

#[tokio::test]
async fn the_subscription_ends_when_the_ui_vm_leaves_the_catalog() {
    let mut d = ui_daemon();
    d.start().unwrap();
    let path = listener(&d, "ui");
    let vm = Client::connect_stream(&path).await.unwrap();
    let mut sub = vm.stream(&Subscribe { since: None }).await.unwrap();
    loop {
        if let Event::Synced { .. } = sub.next().await.unwrap().unwrap() {
            break;
        }
    }
    std::fs::remove_dir_all(d.user().join("ui")).unwrap();
    let host = Client::connect(d.socket()).await.unwrap();
    host.rescan(false).await.unwrap();
    // The removal's batch, then the end of the subscription.
    let mut items = 0;
    while let Some(item) = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the end in time")
    {
        item.unwrap();
        items += 1;
    }
    assert!(items <= 1, "at most the batch that removed it");
    assert!(
        sub.end().is_some(),
        "ended with its StreamEnd, not an error"
    );
    eventually("the listener to go", async || !path.exists()).await;
    assert!(UnixStream::connect(&path).await.is_err());
    assert!(!d.vm_dir().join("ui").exists(), "and its emptied directory");
    // The VM comes back: so does its listener.
    d.user_vm("ui");
    host.rescan(false).await.unwrap();
    eventually("the listener to come back", async || path.exists()).await;
    let again = Client::connect_stream(&path).await.unwrap();
    assert_eq!(again.ping(vec![4]).await.unwrap(), [4]);
}

#[tokio::test]
async fn a_vm_not_named_gets_no_listener() {
    let mut d = ui_daemon();
    d.start().unwrap();
    assert!(listener(&d, "ui").exists());
    for vm in ["appvm", "netvm"] {
        assert!(
            d.vm_dir().join(vm).join("config").exists(),
            "{vm} is active"
        );
        let entries: Vec<_> = std::fs::read_dir(d.vm_dir().join(vm))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(entries, ["config"], "{vm}: nothing to connect to");
    }
    // A name that is not in the catalog gets none either, and nothing breaks.
    let mut d = daemon();
    d.arg("--no-watch")
        .arg("--ui-vm")
        .arg("ghost")
        .arg("--ui-vm")
        .arg("user.ui");
    d.user_vm("ui");
    d.start().unwrap();
    assert!(listener(&d, "ui").exists(), "a qualified reference works");
    assert!(!d.vm_dir().join("ghost").exists());
}

#[tokio::test]
async fn a_ui_vm_never_sees_a_host_path() {
    let mut d = ui_daemon();
    // A warning with a path, and a rejected definition with an error.
    std::fs::write(d.user_vm("appvm").join("stray"), "").unwrap();
    let bad = d.user().join("nokernel");
    std::fs::create_dir_all(bad.join("blk")).unwrap();
    d.start().unwrap();
    let root = d.tree().path().to_string_lossy().into_owned();
    let host = Client::connect(d.socket()).await.unwrap();
    let vm = Client::connect_stream(listener(&d, "ui")).await.unwrap();
    let host_list = format!("{:?}", host.list_vms(true, None).await.unwrap());
    assert!(host_list.contains(&root), "the host sees its paths");

    // The host's activity is not the VM's to see.
    let vm_info = vm.info().await.unwrap();
    assert!(host.info().await.unwrap().connections >= 1);
    assert_eq!((vm_info.connections, vm_info.subscribers), (0, 0));
    let mut seen = vec![
        format!("{:?}", vm.list_vms(true, None).await.unwrap()),
        format!("{:?}", vm.sources().await.unwrap()),
        format!("{vm_info:?}"),
    ];
    for name in ["appvm", "nokernel", "user.appvm"] {
        seen.push(format!(
            "{:?}",
            vm.get_vm(&name.parse().unwrap()).await.unwrap()
        ));
    }
    let mut sub = vm.stream(&Subscribe { since: None }).await.unwrap();
    loop {
        let e = sub.next().await.unwrap().unwrap();
        let synced = matches!(e, Event::Synced { .. });
        seen.push(format!("{e:?}"));
        if synced {
            break;
        }
    }
    d.user_vm("late");
    std::fs::write(d.user().join("late/stray"), "").unwrap();
    host.rescan(false).await.unwrap();
    seen.push(format!("{:?}", sub.next().await.unwrap().unwrap()));
    let all = seen.join("\n");
    assert!(all.contains("stray"), "diagnostics are still there: {all}");
    assert!(all.contains("late"));
    // Not even a piece of the temp directory's name (a path cut short).
    let tmp_name = d.tree().path().file_name().unwrap().to_string_lossy();
    let tmp_piece = &tmp_name[tmp_name.len() - 4..];
    for host_path in [root.as_str(), "/tmp", "/run", "vsock_", tmp_piece] {
        assert!(
            !all.contains(host_path),
            "{host_path} seen by the VM:\n{all}"
        );
    }
}

#[tokio::test]
async fn a_hostile_ui_vm_flood_does_not_starve_a_host_client_or_another_vm() {
    let mut d = ui_daemon();
    d.arg("--ui-vm").arg("other");
    d.user_vm("other");
    for i in 0..150 {
        d.user_vm(&format!("vm{i:03}"));
    }
    d.start().unwrap();
    let path = listener(&d, "ui");
    // The VM opens connection after connection, and never reads the
    // 32 ListVms it asks for on each.
    let mut flood = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        let mut s = UnixStream::connect(&path).await.unwrap();
        let hello = Hello {
            client: "hostile".into(),
            versions: SUPPORTED_VERSIONS,
            max_frame: LIMIT_MAX_FRAME,
            features: Features::default(),
        };
        s.write_all(&message::hello(&hello).unwrap()).await.unwrap();
        let mut framer = StreamFramer::new(LIMIT_MAX_FRAME);
        let (h, body) = read_frame(&mut s, &mut framer).await.expect("an answer");
        if h.kind == FrameKind::Error {
            let e: ErrorBody = codec::decode(&body, Compat::Exact).unwrap();
            assert_eq!(e.code, ErrorCode::Busy);
            refused += 1;
            continue;
        }
        for id in 1..=32u32 {
            let list = ListVms {
                include_inactive: true,
                source: None,
            };
            let f = message::request(id, &list, LIMIT_MAX_FRAME).unwrap();
            s.write_all(&f).await.unwrap();
        }
        flood.push(s);
    }
    assert_eq!(flood.len(), 8, "a VM's own connection limit");
    assert_eq!(refused, 4);
    // The host is served as before, and so is the VM's fair use elsewhere.
    let host = Client::connect(d.socket()).await.unwrap();
    assert_eq!(host.list_vms(true, None).await.unwrap().vms.len(), 154);
    assert_eq!(host.ping(vec![1; 1000]).await.unwrap(), vec![1; 1000]);
    let info = host.info().await.unwrap();
    assert!(
        info.connections <= 2,
        "VM connections are not the host's: {info:?}"
    );
    // Another UI VM has its own limits: all of them.
    let mut others = Vec::new();
    for _ in 0..8 {
        let c = Client::connect_stream(listener(&d, "other")).await.unwrap();
        assert_eq!(c.list_vms(true, None).await.unwrap().vms.len(), 154);
        others.push(c);
    }
    drop(flood);
}

#[tokio::test]
async fn a_listener_has_its_mode_and_group_from_the_start_where_the_template_says() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(()) = vm_catalog_tests::require_root("giving the listener another group") else {
        return;
    };
    let mut d = ui_daemon();
    let sockets = d.tree().join("sockets");
    d.arg("--ui-vm-socket")
        .arg(format!("{}/{{name}}.{{port}}", sockets.display()))
        .arg("--vsock-port")
        .arg("5000")
        .arg("--ui-vm-socket-mode")
        .arg("0660")
        .arg("--ui-vm-socket-group")
        .arg("4242");
    d.start().unwrap();
    let path = sockets.join("ui.5000");
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o660, 4242));
    assert!(!listener(&d, "ui").exists(), "not at the default path");
    // Nothing else was left beside it (no staging directory).
    let names: Vec<_> = std::fs::read_dir(&sockets)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["ui.5000"]);
    let vm = Client::connect_stream(&path).await.unwrap();
    assert_eq!(vm.ping(vec![1]).await.unwrap(), [1]);
    // The daemon stops: its listener goes.
    drop(vm);
    d.stop();
    assert!(!path.exists());
}

/// The listener of the spectrum layout's `nobody` (a VM named after a user
/// that exists, so that `--ui-vm-socket-owner {name}` finds its owner):
/// `<tree>/vsock/<id>/vsock_<port>`, in a directory the daemon does not make.
fn spectrum_ui_daemon() -> TestDaemon {
    let mut d = daemon();
    let template = format!("{}/vsock/{{id}}/vsock_{{port}}", d.tree().path().display());
    d.arg("--no-watch")
        .arg("--vm-layout")
        .arg("spectrum")
        .arg("--ui-vm")
        .arg("nobody")
        .arg("--ui-vm-socket")
        .arg(template)
        .arg("--ui-vm-socket-owner")
        .arg("{name}");
    d.user_vm("nobody");
    d.user_vm("appvm");
    d
}

/// Adds a VM and rescans: a publish, at which UI VM listeners are made
/// again where they are missing.
async fn publish_again(d: &TestDaemon, host: &Client, n: &mut u32) {
    *n += 1;
    d.user_vm(&format!("extra{n}"));
    host.rescan(false).await.unwrap();
}

/// Whether `vm` is active with a `listener-refused` warning.
fn refused(vm: &VmEntry) -> bool {
    assert_eq!(vm.state, VmState::Active, "{vm:?}");
    vm.diagnostics
        .iter()
        .any(|d| d.code == DiagCode::ListenerRefused && d.severity == Severity::Warning)
}

/// Regression: a `/run/vsock/<id>` planted as a symbolic link was
/// followed; the listener's directory, which the daemon did not make, was
/// removed when the VM left; and the listener's owner could not be the
/// VM's own VMM user. And (issue 22) the refusal was only in the log: it is
/// a `listener-refused` warning on the VM's entry until the listener binds.
#[tokio::test]
async fn a_spectrum_listener_waits_for_its_directory_refuses_a_link_and_leaves_it() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Some(()) = vm_catalog_tests::require_root("a listener owned by another user") else {
        return;
    };
    let mut d = spectrum_ui_daemon();
    d.start().unwrap();
    let host = Client::connect(d.socket()).await.unwrap();
    let name: VmName = "nobody".parse().unwrap();
    let id = host.get_vm(&name).await.unwrap().vm.id.unwrap();
    let dir = d.tree().join("vsock").join(id.as_str());
    let path = dir.join(format!("vsock_{}", stream::DEFAULT_VSOCK_PORT));
    assert!(!dir.exists(), "the daemon does not make the VM's directory");
    assert!(!d.tree().join("vsock").exists());

    // Planted as a link: refused, nothing made where it points.
    let elsewhere = d.tree().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::create_dir_all(d.tree().join("vsock")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &dir).unwrap();
    let mut n = 0;
    publish_again(&d, &host, &mut n).await;
    eventually("the refusal in the log", async || {
        d.log()
            .contains("is a symbolic link: refused, not followed")
    })
    .await;
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
    // And on the VM's entry, which stays active: `show` says why it has no
    // listener.
    eventually("listener-refused on the entry", async || {
        refused(&host.get_vm(&name).await.unwrap().vm)
    })
    .await;
    let shown = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .args(["show", "nobody"])
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&shown.stdout);
    assert!(shown.contains("listener-refused"), "{shown}");
    assert!(shown.contains("refused, not followed"), "{shown}");

    // The hook makes it, owned by the VMM's user: the next publish binds.
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    publish_again(&d, &host, &mut n).await;
    eventually("the listener", async || path.exists()).await;
    let m = std::fs::symlink_metadata(&path).unwrap();
    assert!(m.file_type().is_socket());
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o600, 65534), "nobody's");
    let vm = Client::connect_stream(&path).await.unwrap();
    assert_eq!(vm.ping(vec![7]).await.unwrap(), [7]);
    drop(vm);
    eventually("listener-refused gone once bound", async || {
        !refused(&host.get_vm(&name).await.unwrap().vm)
    })
    .await;

    // The VM leaves: its listener goes, the directory it did not make stays.
    std::fs::remove_dir_all(d.user().join("nobody")).unwrap();
    host.rescan(false).await.unwrap();
    eventually("the listener to go", async || !path.exists()).await;
    assert!(dir.is_dir(), "not the daemon's to remove");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
}
