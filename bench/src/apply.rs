//! The `apply` suite: what one apply of the s6-rc applier costs, against
//! bare `s6-rc-compile` + `s6-rc-update` of the same database in the same
//! run.
//!
//! For 10, 100 and 500 VMs, on a real s6-svscan with every VM up (a test
//! VMM: ready at once, then `sleep`), each run:
//! 1. applies a set that differs from the live one by one VM (added or
//!    removed, down): render, write, compile, update, saving the state and
//!    moving the old database out (a rename), total;
//! 2. tidies, as the rescan worker does after the reply (old sources and
//!    service directories; timed apart: not part of the apply), and waits
//!    until the background deletion of the old database is done (timed
//!    too), so that it disturbs nothing measured after it;
//! 3. applies the same set again: the no-op apply (render + fingerprint);
//! 4. makes the same change by hand, the baseline: the live directory is put
//!    back on the applier's previous source (not timed), then the source the
//!    applier compiled — a plain copy of it, with no symlinks — is compiled
//!    with `s6-rc-compile` and switched to with `s6-rc-update`, timed
//!    directly; then the live directory goes back to the applier's database
//!    (not timed), so that the applier's next apply starts from its own
//!    database as in the daemon, not from one switched to behind its back
//!    (which it would first adopt, reading every VM's pid and `s6-rc-db`).
//!
//! Figures are median [min–max] over the runs; apply/bare is, per run, the
//! apply total over the bare compile + update of the same run (adjacent in
//! time, so that the load of the machine weighs on both alike), median
//! [min–max] over the runs. Scratch
//! directories are on tmpfs (`/dev/shm`) unless `TMPDIR` says otherwise:
//! `/run`, where the live directory goes, is a tmpfs on a real host.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use vm_catalog_protocol::ApplyStatus;
use vm_catalog_tests::s6::{Svscan, write_vm_command};
use vm_catalogd::apply::s6rc::{S6rcApplier, S6rcConfig};
use vm_catalogd::apply::{ActiveVm, Applier, ApplyRequest};

/// VM counts measured.
const SIZES: [usize; 3] = [10, 100, 500];
/// Issue 16's target: the apply within this factor of bare s6-rc, at the
/// VM counts of [`TARGET_SIZES`].
const TARGET: f64 = 1.1;
const TARGET_SIZES: [usize; 2] = [100, 500];

/// Runs the suite; `quick` does fewer runs.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let Some(bin) = vm_catalog_tests::s6rc_bindir() else {
        println!("apply: SKIP: s6-rc not installed (set S6RC_BINDIR or put s6-rc-compile on PATH)");
        return Ok(());
    };
    if vm_catalog_tests::which("s6-svscan").is_none() {
        println!("apply: SKIP: s6-svscan not installed (Debian package s6)");
        return Ok(());
    }
    let runs = if quick { 3 } else { 11 };
    let scratch = scratch_dir();
    println!(
        "apply: s6-rc from {}; scratch dir {} (state, live and scan dirs); every VM up; \
         {runs} runs per size; median [min-max]",
        bin.display(),
        scratch.display()
    );
    println!(
        "{:>5} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} {:>22} | {:>22} {:>22} {:>18}",
        "VMs",
        "render+fp",
        "write source",
        "compile",
        "update",
        "save + move out",
        "the rest",
        "own work",
        "apply total",
        "no-op apply",
        "tidy (after reply)",
        "background delete",
        "bare s6-rc-compile",
        "bare s6-rc-update",
        "apply/bare"
    );
    let mut ratios = Vec::new();
    for n in SIZES {
        let row = measure(&bin, &scratch, n, runs)?;
        let mut paired: Vec<f64> = row
            .total
            .0
            .iter()
            .zip(row.bare_compile.0.iter().zip(&row.bare_update.0))
            .map(|(t, (c, u))| t.as_secs_f64() / (*c + *u).as_secs_f64())
            .collect();
        paired.sort_by(f64::total_cmp);
        let ratio = paired[paired.len() / 2];
        ratios.push((n, ratio));
        println!(
            "{n:>5} {} {} {} {} {} {} {} {} {} {} {} | {} {} {:>18}",
            row.render.show(),
            row.write.show(),
            row.compile.show(),
            row.update.show(),
            row.cleanup.show(),
            row.rest.show(),
            row.own.show(),
            row.total.show(),
            row.noop.show(),
            row.tidy.show(),
            row.trash.show(),
            row.bare_compile.show(),
            row.bare_update.show(),
            format!(
                "{ratio:.2}x [{:.2}-{:.2}]",
                paired[0],
                paired[paired.len() - 1]
            )
        );
        println!(
            "      (first apply, s6-rc-init of {n} VMs: {}; service directories written per \
             apply: {})",
            ms(row.init),
            row.written
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    println!(
        "the rest: the apply's other work (checks of the scanner, the pids of running VMs, \
         every scan-directory link); own work: the apply total but compile and update; apply/bare: per run, the apply total over that run's bare \
         compile + update, median [min-max] over the runs; the tidy runs after the reply, the \
         background delete on another thread"
    );
    for (n, ratio) in ratios {
        if TARGET_SIZES.contains(&n) {
            let met = if ratio <= TARGET { "met" } else { "NOT met" };
            println!("target: apply within {TARGET}x of bare s6-rc at {n} VMs: {ratio:.2}x, {met}");
        }
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Row {
    init: Duration,
    render: Samples,
    write: Samples,
    compile: Samples,
    update: Samples,
    cleanup: Samples,
    rest: Samples,
    own: Samples,
    total: Samples,
    noop: Samples,
    tidy: Samples,
    trash: Samples,
    written: Vec<usize>,
    bare_compile: Samples,
    bare_update: Samples,
}

#[derive(Debug, Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn median(&self) -> Duration {
        let mut v = self.0.clone();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or_default()
    }

    fn show(&self) -> String {
        let min = self.0.iter().min().copied().unwrap_or_default();
        let max = self.0.iter().max().copied().unwrap_or_default();
        format!(
            "{:>22}",
            format!("{} [{}-{}]", ms(self.median()), ms(min), ms(max))
        )
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.3}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

fn vms(n: usize, extra: bool) -> Vec<ActiveVm> {
    let mut v: Vec<ActiveVm> = (0..n)
        .map(|i| {
            let name = format!("vm{i:04}");
            // One VM in ten uses vm0000 as its network provider.
            let providers = if i % 10 == 1 {
                vec!["vm0000".parse().unwrap()]
            } else {
                vec![]
            };
            ActiveVm {
                view: format!("/run/vm/{name}/config").into(),
                name: name.parse().unwrap(),
                providers,
                fingerprint: i as u64,
                id: format!("id{i}").parse().unwrap(),
            }
        })
        .collect();
    if extra {
        v.push(ActiveVm {
            name: "extra".parse().unwrap(),
            view: "/run/vm/extra/config".into(),
            providers: vec![],
            fingerprint: 0,
            id: "extra".parse().unwrap(),
        });
    }
    v
}

/// `$TMPDIR` if set, else `/dev/shm` (tmpfs, like `/run` where the live
/// directory goes on a real host), else the system temp dir.
pub(crate) fn scratch_dir() -> PathBuf {
    if std::env::var_os("TMPDIR").is_none() && Path::new("/dev/shm").is_dir() {
        return "/dev/shm".into();
    }
    std::env::temp_dir()
}

fn measure(bin: &Path, scratch: &Path, n: usize, runs: usize) -> Result<Row, String> {
    let tmp = tempfile::tempdir_in(scratch).map_err(|e| e.to_string())?;
    let root = fs::canonicalize(tmp.path()).map_err(|e| e.to_string())?;
    let vmm = write_vm_command(&root.join("vmm")).map_err(|e| e.to_string())?;
    let svscan = Svscan::start(&root.join("scan"), 2 * n + 100).map_err(|e| e.to_string())?;
    let mut config = S6rcConfig::new(root.join("state"));
    config.bin_dir = Some(bin.to_owned());
    config.live_dir = root.join("live");
    config.scandir = svscan.scandir().to_owned();
    config.start_command = vmm;
    config.max_services = n + 1;
    let mut applier = S6rcApplier::open(config).map_err(|e| e.to_string())?;
    let live = root.join("live");
    let mut row = Row::default();

    let t = Instant::now();
    expect(
        &applier
            .apply(&ApplyRequest {
                generation: 0,
                vms: vms(n, false),
            })
            .outcome
            .status,
        ApplyStatus::Applied,
    )?;
    row.init = t.elapsed();
    let names: Vec<String> = (0..n).map(|i| format!("vm{i:04}")).collect();
    let mut up = Command::new(bin.join("s6-rc"));
    up.arg("-l")
        .arg(&live)
        .arg("-t")
        .arg("60000")
        .arg("-u")
        .arg("change")
        .args(&names);
    check(up.env("PATH", child_path(bin)))?;
    // What the baseline starts each change from: the applier's last source.
    let mut previous = root.join("bare-src-init");
    copy_plain(&live_source(&live)?, &previous)?;

    for run in 0..runs {
        let generation = 2 * run as u64 + 1;
        let request = ApplyRequest {
            generation,
            vms: vms(n, run % 2 == 0),
        };
        let report = applier.apply(&request);
        expect(&report.outcome.status, ApplyStatus::Applied)?;
        let t = applier.last_timings();
        row.render.0.push(t.render);
        row.write.0.push(t.write);
        row.compile.0.push(t.compile);
        row.update.0.push(t.switch);
        row.cleanup.0.push(t.cleanup);
        row.rest.0.push(
            t.total
                .saturating_sub(t.render + t.write + t.compile + t.switch + t.cleanup),
        );
        row.own.0.push(t.total.saturating_sub(t.compile + t.switch));
        row.total.0.push(t.total);
        row.written.push(t.written);
        applier.tidy();
        row.tidy.0.push(applier.last_timings().tidy);
        let start = Instant::now();
        applier.settle();
        row.trash.0.push(start.elapsed());

        let again = ApplyRequest {
            generation: generation + 1,
            vms: request.vms,
        };
        let start = Instant::now();
        let report = applier.apply(&again);
        row.noop.0.push(start.elapsed());
        expect(&report.outcome.status, ApplyStatus::Unchanged)?;

        // The baseline: the same change by hand. The live directory is put
        // back where the applier started from (its previous source, as
        // plain directories, compiled and switched to: not timed); then the
        // same source the applier compiled, as plain directories, is
        // compiled and switched to (timed); then back to the applier's own
        // database (not timed), so that its next apply starts from what it
        // made, as in the daemon (not from a database someone switched to
        // behind its back).
        let own = fs::read_link(live.join("compiled")).map_err(|e| e.to_string())?;
        let source = root.join(format!("bare-src-{run}"));
        copy_plain(&live_source(&live)?, &source)?;
        let from = root.join(format!("bare-from-{run}"));
        compile(bin, &from, &previous)?;
        update(bin, &live, &from)?;
        let db = root.join(format!("bare-{run}"));
        row.bare_compile.0.push(compile(bin, &db, &source)?);
        row.bare_update.0.push(update(bin, &live, &db)?);
        update(bin, &live, &own)?;
        for d in [&previous, &from, &db] {
            fs::remove_dir_all(d).map_err(|e| e.to_string())?;
        }
        previous = source;
    }
    drop(svscan);
    Ok(row)
}

/// `s6-rc-compile DB SOURCE`, timed.
fn compile(bin: &Path, db: &Path, source: &Path) -> Result<Duration, String> {
    check(Command::new(bin.join("s6-rc-compile")).arg(db).arg(source))
}

/// `s6-rc-update -l LIVE DB`, timed.
fn update(bin: &Path, live: &Path, db: &Path) -> Result<Duration, String> {
    let mut cmd = Command::new(bin.join("s6-rc-update"));
    cmd.arg("-l").arg(live).arg(db).env("PATH", child_path(bin));
    check(&mut cmd)
}

/// The rendered source of the database the applier made live.
pub(crate) fn live_source(live: &Path) -> Result<PathBuf, String> {
    let db = fs::read_link(live.join("compiled")).map_err(|e| e.to_string())?;
    let name = db.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    let id = name
        .strip_prefix("db-")
        .ok_or(format!("unexpected live db {}", db.display()))?;
    Ok(db.with_file_name(format!("src-{id}")))
}

/// `cp -RL from to`: a copy of a source directory with its symlinks
/// followed, so that the bare tools read plain directories.
pub(crate) fn copy_plain(from: &Path, to: &Path) -> Result<(), String> {
    let mut cp = Command::new("cp");
    cp.arg("-RL").arg(from).arg(to);
    check(&mut cp).map(drop)
}

pub(crate) fn child_path(bin: &Path) -> String {
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
    )
}

pub(crate) fn check(cmd: &mut Command) -> Result<Duration, String> {
    let t = Instant::now();
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(took)
}

fn expect(got: &ApplyStatus, want: ApplyStatus) -> Result<(), String> {
    if *got == want {
        Ok(())
    } else {
        Err(format!(
            "apply: expected {}, got {}",
            want.as_str(),
            got.as_str()
        ))
    }
}
