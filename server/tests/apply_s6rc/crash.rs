//! Crash safety (issue 12): the daemon killed while its `s6-rc-update` runs
//! and started again at once; an update still running when an applier
//! opens; an s6-rc call that hangs; supervisors left in deleted live
//! directories. Against real s6-rc, the daemon binary included; the
//! waiting logic also on the fake.
//!
//! An update is held in its down phase by a VM whose stop waits for a
//! release file, so each step happens in a known order.

use std::fs;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use vm_catalog_tests::daemon::TestDaemon;
use vm_catalog_tests::s6::{Svscan, alive, svstat_pid, wait_for};
use vm_catalogd::apply::Applier;
use vm_catalogd::apply::process::ToolError;
use vm_catalogd::apply::s6rc::S6rcConfig;
use vm_catalogd::apply::s6rc::outcome::{Cause, S6rcOutcome};

use crate::rig::{RealRig, Rig, processes, req, result, slow_vmm, untimed_template, vm};

/// `config` with the VMM whose `slow` VM stops on `release` and whose
/// `never` VM never becomes ready, and a template without timeouts.
fn slow_config(r: &impl Rig, config: S6rcConfig) -> (S6rcConfig, std::path::PathBuf) {
    let release = r.root().join("release");
    let mut c = config;
    c.start_command = slow_vmm(&r.root().join("slow-vmm"), &release);
    c.template_dir = Some(untimed_template(&r.root().join("template")));
    (c, release)
}

/// Waits until the real `s6-rc-update` from `bin` (not its wrapper) runs
/// on `live`.
fn update_runs(bin: &std::path::Path, live: &std::path::Path) -> bool {
    let (program, live) = (bin.join("s6-rc-update"), live.display().to_string());
    let program = program.display().to_string();
    wait_for(Duration::from_secs(20), || {
        processes("s6-rc-update")
            .iter()
            .any(|p| p.cmdline.starts_with(&program) && p.cmdline.contains(&live))
    })
}

#[test]
fn an_orphaned_update_keeps_its_target_database() {
    let Some(r) = RealRig::new() else { return };
    let (config, release) = slow_config(&r, r.config());
    let mut a = r.open_with(config.clone()).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("slow", &[], 1)]));
    let pid = r.start(&["a", "slow"])[0];
    // The update that stops `slow` runs on while another applier opens, as
    // an orphan does when its daemon was killed and restarted.
    let orphan = std::thread::spawn(move || {
        let rep = a.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
        (rep, a)
    });
    assert!(update_runs(&r.bin, &r.live()), "the update runs");
    // The new applier's wait for quiet runs out whatever its length (the
    // update is held until the release file exists), so it goes on while
    // the update runs. The same value is the deadline of each of its own
    // s6-rc programs: 5 s, which load cannot eat (300 ms could: issue 22).
    let mut short = config.clone();
    short.timeout = Duration::from_secs(5);
    let mut b = r.open_with(short).unwrap();
    let target = r.root().join("state/db-2-0");
    assert!(
        target.join("db").is_file(),
        "the update's target database is still there"
    );
    assert!(
        r.root().join("state/db-1-0/db").is_file(),
        "and the live one"
    );
    assert_eq!(
        b.state().next.as_ref().map(|n| n.database.clone()),
        Some(target.clone()),
        "the applier knows what the update may switch to"
    );

    fs::write(&release, "").unwrap();
    let (rep, a) = orphan.join().unwrap();
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    drop(a);
    assert_eq!(r.compiled(), target);
    let rep = b.apply(&req(2, vec![vm("a", &[], 1), vm("b", &[], 1)]));
    assert_eq!(
        *result(&rep),
        S6rcOutcome::Unchanged,
        "{}",
        rep.outcome.message
    );
    assert_eq!(r.db_services(), ["a", "b"]);
    assert_eq!(r.pid("a"), Some(pid));
    assert_eq!(r.dbs(), ["db-2-0"]);
    assert!(r.in_sync());
}

#[test]
fn a_hung_s6rc_call_times_out_and_is_reported() {
    let Some(r) = RealRig::new() else { return };
    // The deadline of every s6-rc program the applier runs, the compiles
    // and the first and last updates included: 5 s, which load cannot eat
    // (1 s could: issue 22), and only the hung update reaches it.
    const DEADLINE: Duration = Duration::from_secs(5);
    let (mut config, _release) = slow_config(&r, r.config());
    config.timeout = DEADLINE;
    let mut a = r.open_with(config).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1), vm("never", &[], 1)]));
    // Someone's `s6-rc -u change never` waits forever for a readiness that
    // never comes, holding the live lock (issue 12: a rescan blocked for
    // 8.5 minutes behind such a call).
    let live = r.live();
    let mut holder = Command::new(r.bin.join("s6-rc"))
        .args(["-b", "-l", live.to_str().unwrap(), "-u", "change", "never"])
        .env("PATH", format!("{}:/usr/bin:/bin", r.bin.display()))
        .process_group(0)
        .spawn()
        .unwrap();
    let locked = wait_for(Duration::from_secs(20), || {
        r.s6rc("s6-rc", &["-l", live.to_str().unwrap(), "-a", "list"])
            .0
            == 111
    });
    assert!(locked, "s6-rc -u holds the live lock");
    // Only so that the test ends if the apply never returns by itself.
    let done = Arc::new(AtomicBool::new(false));
    let (flag, group) = (done.clone(), holder.id() as i32);
    let unblock = std::thread::spawn(move || {
        if !wait_for(Duration::from_secs(60), || flag.load(Ordering::SeqCst)) {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::killpg(group, libc::SIGKILL) };
        }
    });

    let rep = a.apply(&req(
        2,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("never", &[], 1)],
    ));
    done.store(true, Ordering::SeqCst);
    unblock.join().unwrap();
    let S6rcOutcome::FailedBeforeSwitch(Cause::TimedOut {
        error,
        others,
        lock_holder,
    }) = result(&rep)
    else {
        panic!("{:?}: {}", rep.result, rep.outcome.message)
    };
    assert!(
        matches!(error, ToolError::TimedOut { program: "s6-rc-update", after, .. } if *after == DEADLINE),
        "{error}"
    );
    assert!(others.iter().any(|h| h.pid == holder.id()), "{others:?}");
    assert_eq!(*lock_holder, Some(Some(holder.id())));
    let m = &rep.outcome.message;
    assert!(
        m.contains("s6-rc-update did not finish within 5 s and was killed"),
        "{m}"
    );
    assert!(
        m.contains(&format!("pid {} holds the live lock", holder.id())),
        "{m}"
    );
    assert_eq!(
        r.compiled(),
        r.root().join("state/db-1-0"),
        "nothing switched"
    );
    assert_eq!(r.db_services(), ["a", "never"]);

    // SAFETY: as above.
    unsafe { libc::killpg(holder.id() as i32, libc::SIGKILL) };
    holder.wait().unwrap();
    let rep = a.apply(&req(
        3,
        vec![vm("a", &[], 1), vm("b", &[], 1), vm("never", &[], 1)],
    ));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert_eq!(r.db_services(), ["a", "b", "never"]);
}

#[test]
fn stale_supervisors_of_dead_live_dirs_are_removed() {
    let Some(r) = RealRig::with_scanner_limit(14) else {
        return;
    };
    let mut config = r.config();
    config.timeout = Duration::from_secs(20);
    let mut a = r.open_with(config.clone()).unwrap();
    a.apply(&req(1, vec![vm("a", &[], 1)]));
    let pid = r.start(&["a"])[0];
    drop(a);
    // What a kill loop left (issue 12): supervisors running in a live
    // directory that was deleted, their links gone, no prune since. Each
    // holds one of s6-svscan's slots: 3 + 7 of 14 here.
    let dead = r.root().join("live:s6-rc-update:dead");
    let scan = r.root().join("scan");
    for i in 0..7 {
        let dir = dead.join(format!("servicedirs/ghost{i}"));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("run"), "#!/bin/sh\nexec sleep 1000000\n").unwrap();
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o755);
        fs::set_permissions(dir.join("run"), mode).unwrap();
        std::os::unix::fs::symlink(&dir, scan.join(format!("vm-ghost{i}"))).unwrap();
    }
    Command::new("s6-svscanctl")
        .arg("-a")
        .arg(&scan)
        .status()
        .unwrap();
    let ghosts_up = wait_for(Duration::from_secs(20), || {
        (0..7).all(|i| svstat_pid(&dead.join(format!("servicedirs/ghost{i}"))).is_some())
    });
    assert!(ghosts_up, "the ghost services run");
    // This rig's own supervisors only (its s6-svscan's children): another
    // run of this test on the machine has ghosts of the same names.
    let ghosts: Vec<u32> = processes("s6-supervise")
        .into_iter()
        .filter(|p| p.ppid == r.svscan.pid() && p.cmdline.contains("vm-ghost"))
        .map(|p| p.pid)
        .collect();
    assert_eq!(ghosts.len(), 7);
    for i in 0..7 {
        fs::remove_file(scan.join(format!("vm-ghost{i}"))).unwrap();
    }
    fs::remove_dir_all(&dead).unwrap();

    let mut a = r.open_with(config).unwrap();
    let left: Vec<u32> = ghosts.iter().copied().filter(|&g| alive(g)).collect();
    assert!(
        left.is_empty(),
        "supervisors of the deleted live directory still run: {left:?}"
    );
    assert_eq!(
        r.pid("a"),
        Some(pid),
        "the live directory's supervisors are untouched"
    );
    // Their slots are free again: an update that re-supervises 5 services
    // fits.
    let rep = a.apply(&req(
        2,
        ["a", "b", "c", "d"].iter().map(|n| vm(n, &[], 1)).collect(),
    ));
    assert!(
        matches!(result(&rep), S6rcOutcome::Applied(_)),
        "{}",
        rep.outcome.message
    );
    assert_eq!(r.db_services(), ["a", "b", "c", "d"]);
    assert_eq!(r.pid("a"), Some(pid));
}

/// The real daemon, killed (SIGKILL) while its `s6-rc-update` runs, then
/// started again at once with the same arguments.
struct Crash {
    daemon: TestDaemon,
    bin: std::path::PathBuf,
    live: std::path::PathBuf,
    scan: std::path::PathBuf,
    release: std::path::PathBuf,
    // Dropped last: stops every VM.
    _svscan: Svscan,
}

impl Crash {
    fn new() -> Option<Crash> {
        let bin = vm_catalog_tests::require_s6rc()?;
        vm_catalog_tests::require_tool("s6-svscan")?;
        let mut daemon = TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"));
        let root = daemon.tree().path().to_owned();
        let svscan = Svscan::start(&root.join("scan"), 200).unwrap();
        let release = root.join("release");
        let vmm = slow_vmm(&root.join("vmm"), &release);
        let template = untimed_template(&root.join("template"));
        let (live, scan) = (root.join("live"), root.join("scan"));
        let args: [std::ffi::OsString; 12] = [
            "--apply".into(),
            "s6-rc".into(),
            "--s6rc-bindir".into(),
            bin.clone().into(),
            "--live".into(),
            live.clone().into(),
            "--scandir".into(),
            scan.clone().into(),
            "--start-command".into(),
            vmm.into(),
            "--service-template".into(),
            template.into(),
        ];
        for a in args {
            daemon.arg(a);
        }
        Some(Crash {
            daemon,
            bin,
            live,
            scan,
            release,
            _svscan: svscan,
        })
    }

    fn s6rc(&self, program: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(self.bin.join(program))
            .arg("-l")
            .arg(&self.live)
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()))
            .output()
            .unwrap();
        let code = out.status.code().unwrap_or(-1);
        (code, String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn pid(&self, name: &str) -> Option<u32> {
        svstat_pid(&self.scan.join(format!("vm-{name}")))
    }

    fn services(&self) -> Vec<String> {
        let (code, out) = self.s6rc("s6-rc-db", &["list", "services"]);
        assert_eq!(code, 0, "s6-rc-db works on the live directory");
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("s6rc-"))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }
}

impl Drop for Crash {
    /// However the test ended, no update it left runs on.
    fn drop(&mut self) {
        let _ = fs::write(&self.release, "");
        let live = self.live.display().to_string();
        for comm in ["s6-rc-update", "s6-rc"] {
            for p in processes(comm) {
                if p.cmdline.contains(&live) {
                    // SAFETY: kill has no memory-safety preconditions.
                    unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
                }
            }
        }
    }
}

#[test]
fn a_restart_during_an_update_waits_for_the_live_lock() {
    let Some(mut c) = Crash::new() else { return };
    c.daemon.builtin_vm("a");
    c.daemon.builtin_vm("slow");
    c.daemon.start().unwrap();
    assert_eq!(c.services(), ["a", "slow"]);
    assert_eq!(c.s6rc("s6-rc", &["-u", "change", "a", "slow"]).0, 0);
    let pid_a = c.pid("a").expect("a runs");

    // slow leaves and c comes: the update stops slow, which waits.
    fs::remove_dir_all(c.daemon.builtin().join("slow")).unwrap();
    c.daemon.builtin_vm("c");
    c.daemon.signal(libc::SIGHUP);
    let daemon_pid = c.daemon.pid();
    let child = wait_for(Duration::from_secs(20), || {
        processes("s6-rc-update")
            .iter()
            .any(|p| p.ppid == daemon_pid)
    });
    assert!(child, "the daemon runs s6-rc-update\n{}", c.daemon.log());
    c.daemon.kill();

    // Started again at once, while the orphaned update still runs; it is
    // released once the new daemon says that it waits (or after a while if
    // it never does).
    let log = c.daemon.tree().join("daemon.log");
    let release = c.release.clone();
    let waiter = std::thread::spawn(move || {
        let waited = wait_for(Duration::from_secs(20), || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("before adopting it")
        });
        fs::write(&release, "").unwrap();
        waited
    });
    c.daemon.start().unwrap();
    let waited = waiter.join().unwrap();
    assert!(
        waited,
        "the new daemon waited for the update\n{}",
        c.daemon.log()
    );
    let compiled = fs::read_link(c.live.join("compiled")).unwrap();
    assert!(
        compiled.is_dir(),
        "the live database {} exists\n{}",
        compiled.display(),
        c.daemon.log()
    );
    assert_eq!(c.services(), ["a", "c"]);
    assert_eq!(c.pid("a"), Some(pid_a), "a kept running");
    assert_eq!(c.s6rc("s6-rc", &["diff"]).0, 0);
    // Another change still works.
    c.daemon.builtin_vm("d");
    let mut client = vm_catalog::BlockingClient::connect(c.daemon.socket()).unwrap();
    let report = client.rescan(false).unwrap();
    assert!(
        !report.outcome.apply.status.is_failure(),
        "{:?}",
        report.outcome.apply
    );
    assert_eq!(c.services(), ["a", "c", "d"]);
    assert_eq!(c.pid("a"), Some(pid_a));
}

/// The real daemon tidies after each rescan's reply: the old database goes,
/// the live one stays.
#[test]
fn the_daemon_removes_old_databases_after_the_reply() {
    let Some(mut c) = Crash::new() else { return };
    c.daemon.builtin_vm("a");
    c.daemon.start().unwrap();
    let state = c.daemon.tree().join("state/s6-rc");
    let dbs = || {
        let mut v: Vec<String> = fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("db-"))
            .collect();
        v.sort();
        v
    };
    let first = dbs();
    assert_eq!(first.len(), 1, "{first:?}");
    c.daemon.builtin_vm("b");
    let mut client = vm_catalog::BlockingClient::connect(c.daemon.socket()).unwrap();
    let report = client.rescan(false).unwrap();
    assert_eq!(report.outcome.apply.status.as_str(), "applied");
    let live = fs::read_link(c.live.join("compiled")).unwrap();
    let live_name = live.file_name().unwrap().to_str().unwrap().to_owned();
    assert_ne!(first[0], live_name);
    assert!(
        wait_for(Duration::from_secs(20), || dbs() == [live_name.clone()]),
        "only the live database is left: {:?}\n{}",
        dbs(),
        c.daemon.log()
    );
    assert!(
        wait_for(Duration::from_secs(20), || fs::read_dir(
            state.join("trash")
        )
        .unwrap()
        .next()
        .is_none()),
        "the trash is emptied"
    );
    assert_eq!(c.services(), ["a", "b"]);
}
