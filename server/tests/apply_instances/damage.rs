//! The state files damaged between two runs of the real daemon, with 29
//! VMMs running as instances (`--instances-up`, the spectrum layout,
//! qualified names, and plain names once): `vm-ids` lost, truncated, with a byte that is not
//! UTF-8 or with an id given to two VMs; the s6-instance applier's
//! `state.json` truncated or garbage; both lost. Each time the daemon
//! starts, every VM keeps its id and its instance, every VMM its pid, and
//! every VM resolves (so `vm-start` would start it); and `vm-catalog
//! status` says what was damaged, not only the log.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vm_catalog_tests::daemon::workspace_bin;
use vm_catalog_tests::s6::{self, wait_for};

use super::daemon::{Host, services};

const VMS: usize = 29;

/// What the second run said: its log, and `vm-catalog status` once started.
struct Told {
    log: String,
    status: String,
}

/// Starts the daemon with 29 running VMMs, stops it, runs `damage` on its
/// state directory, starts it again and checks that nothing was restarted
/// and everything resolves. Returns what the second run said.
fn survives(damage: impl FnOnce(&Path)) -> Option<Told> {
    survives_with("qualified", damage)
}

/// [`survives`] with `--names NAMES`.
fn survives_with(names: &str, damage: impl FnOnce(&Path)) -> Option<Told> {
    let h = Host::new()?;
    let mut d = h.daemon();
    d.arg("--instances-up").arg("--names").arg(names);
    for i in 0..VMS {
        d.user_vm(&format!("vm{i:02}"));
    }
    d.start().unwrap();
    let before = services(&d);
    assert_eq!(before.len(), VMS, "{before:?}");
    let mut pids = BTreeMap::new();
    for (name, (id, service)) in &before {
        assert_eq!(service.as_deref(), Some(id.as_str()), "{name}: {before:?}");
        assert!(
            wait_for(Duration::from_secs(30), || h.pid(id).is_some()),
            "{name}'s VMM did not start"
        );
        pids.insert(id.clone(), h.pid(id).unwrap());
    }
    let listed = s6::instances(&h.service);
    d.stop();
    let log_before = d.log().len();
    damage(&d.tree().join("state"));
    d.start().unwrap();
    let status = Command::new(workspace_bin("vm-catalog"))
        .arg("--socket")
        .arg(d.socket())
        .arg("status")
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let after = services(&d);
    assert_eq!(after, before, "every VM keeps its id and its instance");
    for (id, pid) in &pids {
        assert_eq!(h.pid(id), Some(*pid), "the VMM of {id} was restarted");
    }
    assert_eq!(
        s6::instances(&h.service),
        listed,
        "no instance made or deleted"
    );
    for name in after.keys() {
        let out = Command::new(workspace_bin("vm-catalog"))
            .arg("--socket")
            .arg(d.socket())
            .args(["resolve", name])
            .output()
            .unwrap();
        assert!(out.status.success(), "resolve {name}: {out:?}");
    }
    let log = d.log()[log_before..].to_owned();
    assert!(!log.contains("service-conflict"), "{log}");
    d.stop();
    Some(Told { log, status })
}

fn vm_ids(state: &Path) -> std::path::PathBuf {
    state.join("vm-ids")
}

fn instance_state(state: &Path) -> std::path::PathBuf {
    state.join("s6-instance/state.json")
}

#[test]
fn a_lost_vm_ids_restarted_every_vmm() {
    let Some(t) = survives(|state| fs::remove_file(vm_ids(state)).unwrap()) else {
        return;
    };
    assert!(
        t.log.contains("read again from the by-name links"),
        "{}",
        t.log
    );
    let told = format!("vm-ids: 0 unreadable and 0 overridden lines skipped, {VMS} ids read again");
    assert!(t.status.contains(&told), "{}", t.status);
}

#[test]
fn a_lost_vm_ids_under_plain_names_restarted_every_vmm() {
    survives_with("plain", |state| fs::remove_file(vm_ids(state)).unwrap());
}

#[test]
fn a_truncated_vm_ids_restarted_the_vmms_of_the_lost_lines() {
    let Some(t) = survives(|state| {
        let text = fs::read(vm_ids(state)).unwrap();
        fs::write(vm_ids(state), &text[..text.len() / 2]).unwrap();
    }) else {
        return;
    };
    assert!(
        t.status.contains("ids read again from the by-name links"),
        "{}",
        t.status
    );
}

#[test]
fn a_non_utf8_byte_in_vm_ids_stopped_the_daemon() {
    let Some(t) = survives(|state| {
        let mut text = fs::read(vm_ids(state)).unwrap();
        let second_line = text.iter().position(|b| *b == b'\n').unwrap() + 3;
        text[second_line] = 0xff;
        fs::write(vm_ids(state), text).unwrap();
    }) else {
        return;
    };
    assert!(t.log.contains("VM id lines skipped"), "{}", t.log);
    assert!(t.status.contains("vm-ids: 1 unreadable"), "{}", t.status);
}

#[test]
fn a_duplicated_id_in_vm_ids_restarted_two_vmms() {
    let Some(t) = survives(|state| {
        // The first VM's line takes the second's id: the first owner in
        // the file is the wrong one.
        let text = fs::read_to_string(vm_ids(state)).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let entries: Vec<usize> = (0..lines.len())
            .filter(|i| !lines[*i].starts_with('#'))
            .collect();
        let second_id = lines[entries[1]].split(' ').next().unwrap().to_owned();
        let rest = lines[entries[0]].split_once(' ').unwrap().1.to_owned();
        lines[entries[0]] = format!("{second_id} {rest}");
        fs::write(vm_ids(state), lines.join("\n") + "\n").unwrap();
    }) else {
        return;
    };
    assert!(
        t.status.contains("vm-ids: 0 unreadable and 1 overridden"),
        "{}",
        t.status
    );
}

#[test]
fn a_truncated_state_json_left_every_vm_in_service_conflict() {
    let Some(t) = survives(|state| {
        let text = fs::read(instance_state(state)).unwrap();
        fs::write(instance_state(state), &text[..text.len() / 2]).unwrap();
    }) else {
        return;
    };
    for said in [&t.log, &t.status] {
        assert!(
            said.contains("adopted by their vm-catalogd marker"),
            "{said}"
        );
    }
}

#[test]
fn a_garbage_state_json_left_every_vm_in_service_conflict() {
    let Some(t) = survives(|state| fs::write(instance_state(state), b"\x00garbage{{\xff").unwrap())
    else {
        return;
    };
    let told = "set aside, the instances are adopted by their markers";
    assert!(t.status.contains(told), "{}", t.status);
}

#[test]
fn a_state_json_with_bad_records_loses_only_those() {
    let Some(t) = survives(|state| {
        let text = fs::read_to_string(instance_state(state)).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let made = v["made"].as_object_mut().unwrap();
        let first = made.keys().next().unwrap().clone();
        made[&first]["definition"] = "not a fingerprint".into();
        made.insert("../bad".into(), serde_json::json!({"vm": 1}));
        fs::write(instance_state(state), v.to_string()).unwrap();
    }) else {
        return;
    };
    assert!(
        t.log.contains("records of the s6-instance applier state"),
        "{}",
        t.log
    );
    assert!(t.status.contains("2 unreadable records of"), "{}", t.status);
}

#[test]
fn lost_vm_ids_and_state_json_together_restart_nothing() {
    survives(|state| {
        fs::remove_file(vm_ids(state)).unwrap();
        fs::remove_file(instance_state(state)).unwrap();
    });
}
