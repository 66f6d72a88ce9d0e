//! The two rigs every scenario runs on: [`FakeRig`] (the fake s6-rc on a
//! temporary directory) and [`RealRig`] (s6-rc 0.5.4.1 and a real
//! s6-svscan, each s6-rc program behind a wrapper script that logs the call
//! and injects the faults a scenario asks for).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_catalog_tests::s6::{Svscan, svstat_pid, wait_for, write_vm_command};
use vm_catalogd::apply::s6rc::outcome::S6rcOutcome;
use vm_catalogd::apply::s6rc::tools::S6rc;
use vm_catalogd::apply::s6rc::{Commands, OpenError, S6rcApplier, S6rcConfig};
use vm_catalogd::apply::{ActiveVm, ApplyReport, ApplyRequest};

use crate::fake::{Fake, Fault, services_of};

/// What a scenario needs from its rig.
pub trait Rig {
    /// The s6-rc tools the applier runs.
    type Tools: S6rc;

    /// The temp dir: `live`, `scan`, `state` and the rest are in it.
    fn root(&self) -> &Path;
    /// The tools.
    fn tools(&self) -> Self::Tools;
    /// "Starts" VMs as `s6-rc -u change` does; returns their pids.
    fn start(&self, names: &[&str]) -> Vec<u32>;
    /// Restarts a running VM; returns its new pid.
    fn restart(&self, name: &str) -> u32;
    /// The pid of a VM's process, if it runs.
    fn pid(&self, name: &str) -> Option<u32>;
    /// The VM services of the live database.
    fn db_services(&self) -> Vec<String>;
    /// How many s6-rc programs the applier ran so far.
    fn calls(&self) -> usize;
    /// Makes every compile fail, or not.
    fn fail_compiles(&self, on: bool);
    /// Makes the next updates fail in order.
    fn fail_updates(&self, faults: &[Fault]);
    /// s6-rc's state and s6's agree on what runs (`s6-rc diff` exits 0).
    fn in_sync(&self) -> bool;
    /// Makes the scanner of a scan directory without one look absent (the
    /// real one reads the control FIFO, which has no reader there).
    fn without_scanner(&self);

    /// The applier's configuration on this rig.
    fn config(&self) -> S6rcConfig {
        let root = self.root();
        let mut c = S6rcConfig::new(root.join("state"));
        c.live_dir = root.join("live");
        c.scandir = root.join("scan");
        c.start_command = root.join("vmm");
        c
    }
    /// Opens an applier with `config`.
    fn open_with(&self, config: S6rcConfig) -> Result<S6rcApplier<Self::Tools>, OpenError> {
        S6rcApplier::open_with(config, self.tools())
    }
    /// Opens an applier with [`Rig::config`].
    fn open(&self) -> S6rcApplier<Self::Tools> {
        self.open_with(self.config()).unwrap()
    }
    /// `LIVE`.
    fn live(&self) -> PathBuf {
        self.root().join("live")
    }
    /// `readlink LIVE/compiled`.
    fn compiled(&self) -> PathBuf {
        fs::read_link(self.live().join("compiled")).unwrap()
    }
    /// What `LIVE` points to (`live:s6-rc-init:…`, `live:s6-rc-update:…`).
    fn live_target(&self) -> String {
        fs::read_link(self.live()).unwrap().display().to_string()
    }
    /// `SCANDIR/vm-<name>`.
    fn link(&self, name: &str) -> PathBuf {
        self.root().join("scan").join(format!("vm-{name}"))
    }
    /// The state directory's databases, sources and work directories (not
    /// the service store `svc`, nor `trash`).
    fn state_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root().join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["state.json", "conversions", "svc", "trash"].contains(&n.as_str()))
            .collect();
        v.sort();
        v
    }
    /// The compiled databases in the state directory.
    fn dbs(&self) -> Vec<String> {
        let mut v = self.state_entries();
        v.retain(|n| n.starts_with("db-"));
        v
    }
}

/// The fake s6-rc.
pub struct FakeRig {
    pub fake: Fake,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl FakeRig {
    pub fn new() -> FakeRig {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(root.join("scan")).unwrap();
        FakeRig {
            fake: Fake::new(),
            root,
            _tmp: tmp,
        }
    }
}

impl Rig for FakeRig {
    type Tools = Fake;

    fn root(&self) -> &Path {
        &self.root
    }
    fn tools(&self) -> Fake {
        self.fake.clone()
    }
    fn start(&self, names: &[&str]) -> Vec<u32> {
        names.iter().map(|n| self.fake.start(n)).collect()
    }
    fn restart(&self, name: &str) -> u32 {
        self.fake.start(name)
    }
    fn pid(&self, name: &str) -> Option<u32> {
        self.fake.world().pids.get(name).copied()
    }
    fn db_services(&self) -> Vec<String> {
        services_of(&self.compiled()).into_iter().collect()
    }
    fn calls(&self) -> usize {
        self.fake.world().calls.len()
    }
    fn fail_compiles(&self, on: bool) {
        self.fake.world().fail_compile = on;
    }
    fn fail_updates(&self, faults: &[Fault]) {
        self.fake.world().update_faults = faults.to_vec();
    }
    fn without_scanner(&self) {
        self.fake.world().scanner = false;
    }
    fn in_sync(&self) -> bool {
        true
    }
}

/// Real s6-rc on a real s6-svscan. Fields drop in order: the scanner (and
/// every VM) first.
pub struct RealRig {
    pub svscan: Svscan,
    root: PathBuf,
    /// The real s6-rc programs.
    pub bin: PathBuf,
    _tmp: tempfile::TempDir,
}

impl RealRig {
    /// A rig, or `None` (after printing why) where s6-rc or s6 is missing.
    pub fn new() -> Option<RealRig> {
        RealRig::with_scanner_limit(100)
    }

    /// A rig whose s6-svscan supervises at most `max` services (`-c`).
    pub fn with_scanner_limit(max: usize) -> Option<RealRig> {
        let bin = vm_catalog_tests::require_s6rc()?;
        vm_catalog_tests::require_tool("s6-svscan")?;
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        write_vm_command(&root.join("vmm")).unwrap();
        fs::create_dir(root.join("faults")).unwrap();
        wrap_programs(&bin, &root);
        let svscan = Svscan::start(&root.join("scan"), max).unwrap();
        Some(RealRig {
            svscan,
            root,
            bin,
            _tmp: tmp,
        })
    }

    /// Runs a real s6-rc program; returns (exit code, stdout).
    pub fn s6rc(&self, program: &str, args: &[&str]) -> (i32, String) {
        let out = Command::new(self.bin.join(program))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", self.bin.display()))
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// `s6-rc -l LIVE ARGS…`, which must succeed.
    pub fn change(&self, args: &[&str]) {
        let live = self.live();
        let mut all = vec!["-l", live.to_str().unwrap(), "-t", "20000"];
        all.extend_from_slice(args);
        assert_eq!(self.s6rc("s6-rc", &all).0, 0, "s6-rc {args:?}");
    }

    /// Waits until `pid` is gone.
    pub fn gone(&self, pid: u32) -> bool {
        wait_for(Duration::from_secs(10), || {
            !vm_catalog_tests::s6::alive(pid)
        })
    }
}

impl Rig for RealRig {
    type Tools = Commands;

    fn root(&self) -> &Path {
        &self.root
    }
    fn tools(&self) -> Commands {
        Commands::find(Some(&self.root.join("bin"))).unwrap()
    }
    fn open_with(&self, config: S6rcConfig) -> Result<S6rcApplier<Commands>, OpenError> {
        S6rcApplier::open(config)
    }
    fn config(&self) -> S6rcConfig {
        let root = self.root();
        let mut c = S6rcConfig::new(root.join("state"));
        c.bin_dir = Some(root.join("bin"));
        c.live_dir = root.join("live");
        c.scandir = root.join("scan");
        c.start_command = root.join("vmm");
        c
    }
    fn start(&self, names: &[&str]) -> Vec<u32> {
        let mut args = vec!["-u", "change"];
        args.extend_from_slice(names);
        self.change(&args);
        names
            .iter()
            .map(|n| self.pid(n).expect("up after s6-rc -u"))
            .collect()
    }
    fn restart(&self, name: &str) -> u32 {
        self.change(&["-d", "change", name]);
        self.start(&[name])[0]
    }
    fn pid(&self, name: &str) -> Option<u32> {
        svstat_pid(&self.link(name))
    }
    fn db_services(&self) -> Vec<String> {
        let live = self.live();
        let (code, out) = self.s6rc(
            "s6-rc-db",
            &["-l", live.to_str().unwrap(), "list", "services"],
        );
        assert_eq!(code, 0, "s6-rc-db reads the live database");
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("s6rc-"))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }
    fn calls(&self) -> usize {
        fs::read_to_string(self.root.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .count()
    }
    fn fail_compiles(&self, on: bool) {
        let flag = self.root.join("faults/compile");
        match on {
            true => fs::write(flag, "").unwrap(),
            false => fs::remove_file(flag).unwrap(),
        }
    }
    fn fail_updates(&self, faults: &[Fault]) {
        let lines: String = faults
            .iter()
            .map(|f| match f {
                Fault::Before(code) => format!("before {code}\n"),
                Fault::TakeName(n) => format!("take {n}\n"),
            })
            .collect();
        fs::write(self.root.join("faults/update"), lines).unwrap();
    }
    fn without_scanner(&self) {}
    fn in_sync(&self) -> bool {
        let live = self.live();
        self.s6rc("s6-rc", &["-l", live.to_str().unwrap(), "diff"])
            .0
            == 0
    }
}

/// A bin dir `root/bin` of wrappers around the real s6-rc programs: each
/// logs its call to `root/calls.log`, `s6-rc-compile` fails while
/// `faults/compile` exists, and `s6-rc-update` takes the first line of
/// `faults/update` as its fault:
/// - `before CODE`: exits CODE without running;
/// - `take NAME`: someone takes `vm-NAME` in the scan directory first, so
///   that the update fails after its switch (s6rc.md §2.6).
fn wrap_programs(real: &Path, root: &Path) {
    let dir = root.join("bin");
    fs::create_dir(&dir).unwrap();
    let (log, faults, scan) = (
        root.join("calls.log"),
        root.join("faults"),
        root.join("scan"),
    );
    for e in fs::read_dir(real).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        let fault = match name.as_str() {
            "s6-rc-compile" => format!(
                "if [ -e {f}/compile ]; then echo 's6-rc-compile: fatal: injected' >&2; exit 1; fi",
                f = faults.display()
            ),
            "s6-rc-update" => format!(
                "f=$(head -n1 {f}/update 2>/dev/null); sed -i 1d {f}/update 2>/dev/null\n\
                 case \"$f\" in\n\
                 before\\ *) echo 's6-rc-update: fatal: injected' >&2; exit ${{f#before }} ;;\n\
                 take\\ *) ln -s /nonexistent {scan}/vm-${{f#take }} ;;\n\
                 esac",
                f = faults.display(),
                scan = scan.display(),
            ),
            _ => String::new(),
        };
        let script = format!(
            "#!/bin/sh\necho \"{name} $*\" >> {log}\n{fault}\nexec {real} \"$@\"\n",
            log = log.display(),
            real = e.path().display()
        );
        let path = dir.join(&name);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A process: pid, parent pid, command line.
#[derive(Debug, Clone)]
pub struct Proc {
    pub pid: u32,
    pub ppid: u32,
    pub cmdline: String,
}

/// The processes whose command name is `comm`.
pub fn processes(comm: &str) -> Vec<Proc> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse().ok()));
        if &stat[open + 1..close] != comm || state == Some("Z") {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push(Proc {
            pid,
            ppid: ppid.unwrap_or(0),
            cmdline,
        });
    }
    out
}

pub fn vm(name: &str, providers: &[&str], fingerprint: u64) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: Path::new("/run/vm").join(name).join("config"),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint,
        id: name.replace(['-', '_', '.'], "").parse().unwrap(),
    }
}

pub fn req(generation: u64, vms: Vec<ActiveVm>) -> ApplyRequest {
    ApplyRequest { generation, vms }
}

/// The VMs with a service.
pub fn names(r: &ApplyReport) -> Vec<String> {
    r.services.keys().map(|n| n.to_string()).collect()
}

/// The restart-pending VMs.
pub fn pending(r: &ApplyReport) -> Vec<String> {
    r.restart_pending.iter().map(|n| n.to_string()).collect()
}

/// Writes a test "VMM" at `path` like [`write_vm_command`]'s, except that the
/// VM named `slow` takes until `release` exists to stop (an update that
/// stops it holds the live lock until then), and the VM named `never` never
/// signals readiness (an `s6-rc -u` of it waits forever). Returns `path`.
pub fn slow_vmm(path: &Path, release: &Path) -> PathBuf {
    let script = format!(
        "#!/bin/sh\n\
         if [ \"$1\" = never ]; then exec sleep 1000000; fi\n\
         echo >&3\n\
         exec 3>&-\n\
         if [ \"$1\" = slow ]; then\n\
         \x20 trap 'while [ ! -e {r} ]; do sleep 0.05; done; exit 0' TERM\n\
         \x20 while :; do sleep 1 & wait $!; done\n\
         fi\n\
         exec sleep 1000000\n",
        r = release.display()
    );
    fs::write(path, script).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    path.to_owned()
}

/// A service template at `dir` without the built-in timeouts, so that a
/// stop or a start takes as long as the VM does. Returns `dir`.
pub fn untimed_template(dir: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("type"), "longrun\n").unwrap();
    fs::write(dir.join("notification-fd"), "3\n").unwrap();
    fs::write(
        dir.join("run"),
        "#!/bin/execlineb -P\n@VM_START@ @VM_NAME@\n",
    )
    .unwrap();
    dir.to_owned()
}

/// The s6-rc applier's own account of the apply `rep` reports.
pub fn result(rep: &ApplyReport) -> &S6rcOutcome {
    rep.result.detail().expect("an s6-rc outcome")
}
