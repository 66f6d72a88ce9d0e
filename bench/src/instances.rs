//! The `instances` suite: one change (one VM added, then removed) applied
//! as s6 instances (`--apply s6-instance`) against the same change applied
//! with s6-rc (`--apply s6-rc`), in the same run.
//!
//! For 10, 100 and 500 VMs, every VM up (a test VMM: ready at once, then
//! `sleep`) under a real `s6-svscan`:
//! - s6 instances: a templated service made by `s6-instance-maker`; each
//!   run applies the set plus one VM (one `s6-instance-create`, up), then
//!   the set again (one `s6-instance-delete`, its VMM stopped);
//! - s6-rc: the same two applies with the s6-rc applier (render, compile,
//!   `s6-rc-update` of the whole database), when s6-rc is installed.
//!
//! Figures are the whole `Applier::apply`, median [min–max] over the runs;
//! the ratio is the s6-rc median over the instance median. Scratch
//! directories are on tmpfs (`/dev/shm`) unless `TMPDIR` says otherwise.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use vm_catalog_protocol::ApplyStatus;
use vm_catalog_tests::s6::{self, Svscan, wait_for, write_vm_command};
use vm_catalogd::apply::instance::{InstanceApplier, InstanceConfig, Naming};
use vm_catalogd::apply::s6rc::{S6rcApplier, S6rcConfig};
use vm_catalogd::apply::{ActiveVm, Applier, ApplyRequest};

use crate::stats::Runs;

/// VM counts measured.
const SIZES: [usize; 3] = [10, 100, 500];

/// Runs the suite; `quick` does fewer runs.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    for tool in ["s6-svscan", "s6-instance-maker", "s6-instance-create"] {
        if vm_catalog_tests::which(tool).is_none() {
            println!("instances: SKIP: {tool} not installed (Debian package s6)");
            return Ok(());
        }
    }
    let s6rc = vm_catalog_tests::s6rc_bindir();
    let runs = if quick { 3 } else { 7 };
    let scratch = crate::apply::scratch_dir();
    println!(
        "instances: one VM added, then removed, every VM up; s6 instances against s6-rc{}; \
         scratch dir {}; {runs} runs per size; ms, median [min-max]",
        match &s6rc {
            Some(b) => format!(" (from {})", b.display()),
            None => " (not installed: s6-rc columns skipped)".into(),
        },
        scratch.display()
    );
    println!(
        "{:>5} {:>22} {:>22} | {:>22} {:>22} | {:>9} {:>9}",
        "VMs", "instance add", "instance remove", "s6-rc add", "s6-rc remove", "add x", "remove x"
    );
    for n in SIZES {
        let inst = measure(&scratch, n, runs, Kind::Instances)?;
        let rc = match &s6rc {
            Some(bin) => Some(measure(&scratch, n, runs, Kind::S6rc(bin))?),
            None => None,
        };
        let na = || format!("{:>22}", "n/a");
        let ratio = |a: &Runs, b: &Runs| format!("{:>8.1}x", a.median() / b.median());
        println!(
            "{n:>5} {:>22} {:>22} | {} {} | {} {}",
            inst.add.show(2),
            inst.remove.show(2),
            rc.as_ref()
                .map_or_else(na, |r| format!("{:>22}", r.add.show(1))),
            rc.as_ref()
                .map_or_else(na, |r| format!("{:>22}", r.remove.show(1))),
            rc.as_ref()
                .map_or_else(|| format!("{:>9}", "-"), |r| ratio(&r.add, &inst.add)),
            rc.as_ref()
                .map_or_else(|| format!("{:>9}", "-"), |r| ratio(&r.remove, &inst.remove)),
        );
    }
    Ok(())
}

enum Kind<'a> {
    Instances,
    S6rc(&'a Path),
}

#[derive(Default)]
struct Row {
    add: Runs,
    remove: Runs,
}

fn vms(n: usize, extra: bool) -> Vec<ActiveVm> {
    let mut v: Vec<ActiveVm> = (0..n + usize::from(extra))
        .map(|i| {
            let name = if i == n {
                "extra".to_owned()
            } else {
                format!("vm{i:04}")
            };
            ActiveVm {
                view: format!("/run/vm/{name}/config").into(),
                id: format!("id{i}").parse().unwrap(),
                name: name.parse().unwrap(),
                providers: vec![],
                fingerprint: i as u64,
            }
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

fn measure(scratch: &Path, n: usize, runs: usize, kind: Kind<'_>) -> Result<Row, String> {
    let tmp = tempfile::tempdir_in(scratch).map_err(|e| e.to_string())?;
    let root = fs::canonicalize(tmp.path()).map_err(|e| e.to_string())?;
    let vmm = write_vm_command(&root.join("vmm")).map_err(|e| e.to_string())?;
    let scan = root.join("scan");
    fs::create_dir(&scan).map_err(|e| e.to_string())?;
    if matches!(kind, Kind::Instances) {
        s6::make_instance_service(&scan.join("vmm"), &vmm).map_err(|e| e.to_string())?;
    }
    let svscan = Svscan::start(&scan, 2 * n + 100).map_err(|e| e.to_string())?;
    let mut applier: Box<dyn Applier> = match kind {
        Kind::Instances => {
            let nested = scan.join("vmm/instance");
            if !wait_for(Duration::from_secs(10), || s6::scanner_listens(&nested)) {
                return Err("the templated service's s6-svscan did not start".into());
            }
            let mut c = InstanceConfig::new(root.join("state"));
            c.service = scan.join("vmm");
            c.naming = Naming::Name;
            c.start = true;
            Box::new(InstanceApplier::open(c).map_err(|e| e.to_string())?)
        }
        Kind::S6rc(bin) => {
            let mut c = S6rcConfig::new(root.join("state"));
            c.bin_dir = Some(bin.to_owned());
            c.live_dir = root.join("live");
            c.scandir = scan.clone();
            c.start_command = vmm;
            c.max_services = n + 1;
            Box::new(S6rcApplier::open(c).map_err(|e| e.to_string())?)
        }
    };
    let status = applier.apply(&request(0, vms(n, false))).outcome;
    if status.status != ApplyStatus::Applied {
        return Err(format!("first apply: {}", status.message));
    }
    if let Kind::S6rc(bin) = kind {
        start_all(bin, &root.join("live"), n)?;
    }
    let mut row = Row::default();
    for run in 0..runs {
        let g = 2 * run as u64 + 1;
        row.add
            .push(timed(&mut *applier, request(g, vms(n, true)))?);
        if let Kind::S6rc(bin) = kind {
            // Up, as the instance is (s6-rc adds it down).
            start(bin, &root.join("live"), &["extra".into()])?;
        }
        row.remove
            .push(timed(&mut *applier, request(g + 1, vms(n, false)))?);
    }
    drop(applier);
    drop(svscan);
    Ok(row)
}

fn request(generation: u64, vms: Vec<ActiveVm>) -> ApplyRequest {
    ApplyRequest { generation, vms }
}

/// The whole apply, in ms.
fn timed(applier: &mut dyn Applier, request: ApplyRequest) -> Result<f64, String> {
    let t = Instant::now();
    let report = applier.apply(&request);
    let took = t.elapsed();
    if report.outcome.status != ApplyStatus::Applied {
        return Err(format!(
            "{}: {}",
            report.outcome.status.as_str(),
            report.outcome.message
        ));
    }
    Ok(took.as_secs_f64() * 1000.0)
}

fn start_all(bin: &Path, live: &Path, n: usize) -> Result<(), String> {
    let names: Vec<String> = (0..n).map(|i| format!("vm{i:04}")).collect();
    start(bin, live, &names)
}

fn start(bin: &Path, live: &Path, names: &[String]) -> Result<(), String> {
    let mut up = std::process::Command::new(bin.join("s6-rc"));
    up.arg("-l")
        .arg(live)
        .args(["-t", "60000", "-u", "change"])
        .args(names)
        .env("PATH", crate::apply::child_path(bin));
    crate::apply::check(&mut up).map(drop)
}
