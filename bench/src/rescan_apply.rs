//! `rescan-apply`: the full rescan + apply through the real daemon with
//! s6-rc, against bare `s6-rc-compile` + `s6-rc-update` of the same database
//! change in the same run.
//!
//! For 10, 100 and 500 VMs, the real `vm-catalogd --apply s6-rc` runs on a
//! real `s6-svscan` (temp scan directory, state, live directory and views on
//! the same scratch tmpfs as the `apply` suite), every VM up (the test VMM:
//! ready at once, then `sleep`). Each run adds or removes one definition
//! (`extra`) on disk and calls `Rescan`: scan, merge, views, render,
//! compile, update, publish and the reply, timed by the caller; the
//! daemon's own rescan and apply durations come from the reply. Before each
//! run the bench waits until the daemon's tidy after the previous reply is
//! done (one database left, its trash deleted): the baseline's deletion of
//! its previous database is not timed either.
//!
//! The baseline then replays the same change by hand on the daemon's live
//! directory: its last rendered source (as plain directories: the daemon's
//! links to its service directories followed), with and without `extra`, compiled
//! by `s6-rc-compile` and switched to by `s6-rc-update`, alternately. It
//! runs after the daemon's runs, so neither disturbs the other. The `apply`
//! suite measures the applier without the daemon (and its parts).

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vm_catalog::Client;
use vm_catalog_protocol::ApplyStatus;
use vm_catalog_tests::s6::{Svscan, write_vm_command};

use crate::apply::{check, child_path, copy_plain, live_source, scratch_dir};
use crate::daemon::{self, Daemon};
use crate::stats::{Runs, ms};

/// VM counts measured.
const SIZES: [usize; 3] = [10, 100, 500];
/// The definition added and removed.
const EXTRA: &str = "extra";

/// Figures of one VM count.
#[derive(Debug, Default)]
struct Row {
    start: Duration,
    call: Runs,
    rescan: Runs,
    apply: Runs,
    compile: Runs,
    update: Runs,
}

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let Some(bin) = vm_catalog_tests::s6rc_bindir() else {
        println!(
            "rescan-apply: SKIP: s6-rc not installed (set S6RC_BINDIR or put s6-rc-compile on PATH)"
        );
        return Ok(());
    };
    if vm_catalog_tests::which("s6-svscan").is_none() {
        println!("rescan-apply: SKIP: s6-svscan not installed (Debian package s6)");
        return Ok(());
    }
    // Odd, so the last run adds `extra` and the baseline can take it away.
    let runs = if quick { 3 } else { 7 };
    let scratch = scratch_dir();
    println!(
        "rescan-apply: vm-catalogd --apply s6-rc on a real s6-svscan, s6-rc from {}; scratch \
         {} (state, live, scan dir, views); every VM up; each run adds or removes one VM on \
         disk, then Rescan; baseline: that same change by bare s6-rc-compile + s6-rc-update on \
         the same live dir; {runs} runs per size; ms median [min-max]",
        bin.display(),
        scratch.display()
    );
    println!(
        "{:>5} {:>22} {:>22} {:>22} | {:>22} {:>22} {:>9} {:>9}",
        "VMs",
        "Rescan call",
        "daemon: rescan",
        "daemon: apply",
        "bare s6-rc-compile",
        "bare s6-rc-update",
        "call/bare",
        "apply/bare"
    );
    for n in SIZES {
        let r = measure(&bin, &scratch, n, runs)?;
        let bare = r.compile.median() + r.update.median();
        println!(
            "{n:>5} {:>22} {:>22} {:>22} | {:>22} {:>22} {:>8.2}x {:>8.2}x",
            r.call.show(1),
            r.rescan.show(1),
            r.apply.show(1),
            r.compile.show(1),
            r.update.show(1),
            r.call.median() / bare,
            r.apply.median() / bare,
        );
        println!(
            "      (daemon start with s6-rc-init of {n} VMs, until it answers: {:.0} ms)",
            ms(r.start)
        );
    }
    println!(
        "call/bare: median Rescan call over median bare compile + median bare update; \
         apply/bare: the same for the daemon's reported apply time"
    );
    Ok(())
}

fn measure(bin: &Path, scratch: &Path, n: usize, runs: usize) -> Result<Row, String> {
    let tmp = tempfile::tempdir_in(scratch).map_err(|e| e.to_string())?;
    let root = fs::canonicalize(tmp.path()).map_err(|e| e.to_string())?;
    let vmm = write_vm_command(&root.join("vmm")).map_err(|e| e.to_string())?;
    let svscan =
        Svscan::start(&root.join("scan"), (2 * n + 100).max(1000)).map_err(|e| e.to_string())?;
    let live = root.join("live");
    let mut d = Daemon::new();
    let names: Vec<String> = (0..n).map(|i| format!("vm{i:04}")).collect();
    for (i, name) in names.iter().enumerate() {
        d.tree().vm("user", name);
        // One VM in ten uses vm0000 as its network provider (as in `apply`).
        if i % 10 == 1 {
            d.tree().provider("user", name, "vm0000");
        }
    }
    let mut args: Vec<std::ffi::OsString> = vec![
        "--apply".into(),
        "s6-rc".into(),
        "--live".into(),
        live.clone().into(),
        "--scandir".into(),
        svscan.scandir().into(),
        "--s6rc-bindir".into(),
        bin.into(),
        "--start-command".into(),
        vmm.into(),
        "--max-services".into(),
        (n + 10).to_string().into(),
        "--state-dir".into(),
        root.join("state").into(),
        "--vm-dir".into(),
        root.join("vm").into(),
    ];
    args.extend(daemon::limits(4));
    let t = Instant::now();
    d.start(&args)?;
    let mut row = Row {
        start: t.elapsed(),
        ..Row::default()
    };
    let mut up = Command::new(bin.join("s6-rc"));
    up.arg("-l")
        .arg(&live)
        .args(["-t", "60000", "-u", "change"])
        .args(&names)
        .env("PATH", child_path(bin));
    check(&mut up)?;

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let client = rt
        .block_on(Client::connect(d.socket()))
        .map_err(|e| e.to_string())?;
    for run in 0..runs {
        let extra = d.user().join(EXTRA);
        if (runs - 1 - run) % 2 == 0 {
            d.tree().vm("user", EXTRA);
        } else {
            fs::remove_dir_all(&extra).map_err(|e| e.to_string())?;
        }
        settled(&root.join("state/s6-rc"))?;
        let t = Instant::now();
        let report = rt
            .block_on(client.rescan(false))
            .map_err(|e| e.to_string())?;
        row.call.push(ms(t.elapsed()));
        let o = report.outcome;
        if o.apply.status != ApplyStatus::Applied {
            return Err(format!(
                "{n} VMs: the rescan's apply was {}: {}",
                o.apply.status.as_str(),
                o.apply.message
            ));
        }
        row.rescan.push(o.duration_us as f64 / 1e3);
        row.apply.push(o.apply.duration_us as f64 / 1e3);
    }
    drop(client);
    d.stop();

    // The baseline: the same change, by hand, on the same live directory.
    let with = root.join("bare-with");
    let without = root.join("bare-without");
    copy_plain(&live_source(&live)?, &with)?;
    copy_dir(&with, &without)?;
    fs::remove_dir_all(without.join(EXTRA))
        .map_err(|e| format!("the live source has no service {EXTRA}: {e}"))?;
    let mut previous: Option<std::path::PathBuf> = None;
    for run in 0..runs {
        let source = if run % 2 == 0 { &without } else { &with };
        let db = root.join(format!("bare-db-{run}"));
        let mut compile = Command::new(bin.join("s6-rc-compile"));
        compile.arg(&db).arg(source);
        row.compile.push(ms(check(&mut compile)?));
        let mut update = Command::new(bin.join("s6-rc-update"));
        update
            .arg("-l")
            .arg(&live)
            .arg(&db)
            .env("PATH", child_path(bin));
        row.update.push(ms(check(&mut update)?));
        if let Some(old) = previous.replace(db) {
            fs::remove_dir_all(old).map_err(|e| e.to_string())?;
        }
    }
    drop(svscan);
    Ok(row)
}

/// Waits until the daemon's tidy after the last reply is done: one compiled
/// database left in its state directory, its trash empty. (The baseline's
/// deletion of its previous database is not timed either.)
fn settled(state: &Path) -> Result<(), String> {
    let busy = || {
        let dbs = fs::read_dir(state)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().starts_with("db-"))
                    .count()
            })
            .unwrap_or(0);
        let trash = fs::read_dir(state.join("trash")).is_ok_and(|mut d| d.next().is_some());
        dbs > 1 || trash
    };
    let t = Instant::now();
    while busy() {
        if t.elapsed() > Duration::from_secs(30) {
            return Err(format!("the daemon never tidied {}", state.display()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// `cp -a from to`.
fn copy_dir(from: &Path, to: &Path) -> Result<(), String> {
    let mut cp = Command::new("cp");
    cp.arg("-a").arg(from).arg(to);
    check(&mut cp).map(drop)
}
