//! The `vm-catalog` binary against the real daemon: every command, the JSON
//! shapes, every exit code, and a `watch` that survives a daemon restart
//! (`contrib/bin`'s scripts: tests/contrib_bin.rs).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{cli, daemon, json, run, stdout};
use serde_json::Value;
#[test]
fn list_and_list_all_in_text_and_json() {
    let mut d = daemon();
    d.start().unwrap();
    let o = run(&d, &["list"]);
    assert!(o.status.success(), "{o:?}");
    let text = stdout(&o);
    assert!(text.starts_with("NAME"), "{text}");
    assert!(text.contains("appvm") && text.contains("netvm"), "{text}");
    assert!(
        !text.contains("broken"),
        "inactive definitions only with --all: {text}"
    );

    let o = run(&d, &["list", "--all"]);
    let text = stdout(&o);
    assert!(
        text.contains("broken") && text.contains("missing-kernel"),
        "{text}"
    );
    assert!(text.contains("shadowed by builtin"), "{text}");

    let v = json(&run(&d, &["list", "--json"]));
    assert_eq!(v["epoch"].as_str().unwrap().len(), 16);
    assert!(v["generation"].as_u64().unwrap() >= 1);
    let vms = v["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2);
    let appvm = &vms[0];
    for key in [
        "name",
        "source",
        "state",
        "path",
        "service",
        "providers",
        "diagnostics",
        "restart_pending",
    ] {
        assert!(
            appvm.get(key).is_some(),
            "list --json entries have {key}: {appvm}"
        );
    }
    assert_eq!(appvm["name"], "appvm");
    assert_eq!(appvm["source"], "user");
    assert_eq!(appvm["state"], "active");
    assert_eq!(appvm["service"], Value::Null, "--apply none: no service");
    assert_eq!(appvm["providers"][0]["kind"], "net");
    assert_eq!(appvm["providers"][0]["name"], "netvm");
    assert_eq!(appvm["restart_pending"], false);

    let all = json(&run(&d, &["list", "--all", "--json"]));
    let broken = all["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "broken")
        .unwrap();
    assert_eq!(broken["state"], "rejected");
    assert_eq!(broken["diagnostics"][0]["code"], "missing-kernel");
    assert_eq!(broken["diagnostics"][0]["severity"], "error");
    let only_user = json(&run(&d, &["list", "--all", "--source", "user", "--json"]));
    assert!(
        only_user["vms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["source"] == "user")
    );
}

#[test]
fn show_resolve_sources_status() {
    let mut d = daemon();
    d.start().unwrap();
    let o = run(&d, &["show", "netvm"]);
    let text = stdout(&o);
    assert!(text.contains("source:          builtin"), "{text}");
    assert!(text.contains("also defined in user (shadowed)"), "{text}");
    let v = json(&run(&d, &["show", "netvm", "--json"]));
    assert_eq!(v["vm"]["source"], "builtin");
    assert_eq!(v["others"][0]["source"], "user");
    assert_eq!(v["others"][0]["shadowed_by"], "builtin");

    let v = json(&run(&d, &["sources", "--json"]));
    let labels: Vec<_> = v["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["builtin", "user"]);
    assert_eq!(v["sources"][1]["trust"], "untrusted");
    assert_eq!(v["sources"][1]["definitions"], 3);
    assert!(stdout(&run(&d, &["sources"])).starts_with("LABEL"));

    let v = json(&run(&d, &["status", "--json"]));
    assert_eq!(v["applier"], "none");
    assert_eq!(v["protocol_version"], 1);
    assert_eq!(v["active_vms"], 2);
    assert_eq!(v["last_rescan"]["trigger"], "startup");
    assert_eq!(v["last_apply"]["status"], "disabled");
    let text = stdout(&run(&d, &["status"]));
    assert!(text.contains("applier:            none"), "{text}");
}

#[test]
fn rescan_prints_the_change_batch() {
    let mut d = daemon();
    d.arg("--no-watch");
    d.start().unwrap();
    let o = run(&d, &["rescan"]);
    assert!(stdout(&o).starts_with("nothing changed"), "{o:?}");
    d.user_vm("newvm");
    let v = json(&run(&d, &["rescan", "--dry-run", "--json"]));
    assert_eq!(v["dry_run"], true);
    assert_eq!(v["changed"], true);
    assert_eq!(
        v["generation"], v["generation_before"],
        "a dry run publishes nothing"
    );
    let added: Vec<_> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["event"] == "added")
        .collect();
    assert_eq!(added.len(), 1);
    assert_eq!(added[0]["name"], "newvm");
    let o = run(&d, &["rescan"]);
    let text = stdout(&o);
    assert!(text.contains("added newvm (user, active)"), "{text}");
    assert!(text.contains("apply: disabled"), "{text}");
}

#[test]
fn exit_codes() {
    let mut d = daemon();
    d.start().unwrap();
    // 3: no such VM; and a VM that cannot be started.
    let o = run(&d, &["show", "nosuch"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no VM named nosuch"),
        "{o:?}"
    );
    let o = run(&d, &["resolve", "broken"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("broken (user) is rejected: missing-kernel"),
        "{o:?}"
    );
    // 1: a failure (an active VM that is in no service database: --apply none).
    let o = run(&d, &["resolve", "appvm"]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    // 2: usage.
    let o = run(&d, &["list", "--bogus"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    let o = run(&d, &["show", "bad:name"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    // 5: unreachable.
    let o = Command::new(cli())
        .args(["--socket", "/nonexistent/socket", "status"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    // The environment variable names the socket too.
    let o = Command::new(cli())
        .env("VM_CATALOG_SOCKET", d.socket())
        .arg("status")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // 4: permission denied (needs another user).
    let Some(()) = vm_catalog_tests::require_root("running the CLI as another user") else {
        return;
    };
    let Some(setpriv) = vm_catalog_tests::require_tool("setpriv") else {
        return;
    };
    let o = Command::new(setpriv)
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(cli())
        .arg("--socket")
        .arg(d.socket())
        .arg("rescan")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(4), "{o:?}");
}

/// Lines from a child's stdout, through a channel (so reads can time out).
fn lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Reads JSON lines until one satisfies `want`.
fn wait_line(rx: &mpsc::Receiver<String>, what: &str, want: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no line with {what}"));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(
            v.get("event").is_some() && v.get("generation").is_some(),
            "{v}"
        );
        if v["event"].as_str().is_some_and(|e| {
            !e.starts_with("source") && e != "reset" && e != "resumed" && e != "disconnected"
        }) {
            assert!(v.get("name").is_some(), "VM events carry a name: {v}");
        }
        if want(&v) {
            return v;
        }
    }
}

#[test]
fn watch_prints_changes_and_survives_a_daemon_restart() {
    let mut d = daemon();
    d.arg("--debounce-ms").arg("50");
    d.start().unwrap();
    let mut child = Command::new(cli())
        .arg("--socket")
        .arg(d.socket())
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = lines(&mut child);
    let first = wait_line(&rx, "the initial reset", |v| v["event"] == "reset");
    assert_eq!(first["reason"], "initial");
    wait_line(&rx, "the initial netvm", |v| {
        v["event"] == "added" && v["name"] == "netvm"
    });
    d.user_vm("live");
    wait_line(&rx, "live added", |v| {
        v["event"] == "added" && v["name"] == "live"
    });
    // Restart: the watch reconnects, reports a reset with a new epoch, and
    // the differences (here: one VM removed while the daemon was down).
    d.stop();
    std::fs::remove_dir_all(d.user().join("live")).unwrap();
    d.start().unwrap();
    let reset = wait_line(&rx, "a reset after the restart", |v| v["event"] == "reset");
    assert_eq!(reset["reason"], "new-epoch");
    assert_ne!(reset["epoch"], first["epoch"]);
    wait_line(&rx, "live removed", |v| {
        v["event"] == "removed" && v["name"] == "live"
    });
    d.user_vm("after");
    wait_line(&rx, "a change after the restart", |v| {
        v["event"] == "added" && v["name"] == "after"
    });
    let _ = child.kill();
    let _ = child.wait();
}
