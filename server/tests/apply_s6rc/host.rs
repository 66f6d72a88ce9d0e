//! A host for one test: scan directory with a running s6-svscan, live
//! directory, state directory, the test "VMM", and the applier's config.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_catalog_tests::s6::{Svscan, svstat_pid, wait_for, write_vm_command};
use vm_catalogd::apply::s6rc::{S6rcApplier, S6rcConfig};
use vm_catalogd::apply::{ActiveVm, ApplyReport, ApplyRequest};

/// One test's host. Fields drop in order: the scanner (and every VM) first.
pub struct Host {
    pub svscan: Svscan,
    pub root: PathBuf,
    pub bin: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Host {
    /// A host, or `None` (after printing why) where s6-rc or s6 is missing.
    pub fn new() -> Option<Host> {
        let bin = vm_catalog_tests::require_s6rc()?;
        vm_catalog_tests::require_tool("s6-svscan")?;
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        write_vm_command(&root.join("vmm")).unwrap();
        let svscan = Svscan::start(&root.join("scan"), 100).unwrap();
        Some(Host {
            svscan,
            root,
            bin,
            _tmp: tmp,
        })
    }

    pub fn live(&self) -> PathBuf {
        self.root.join("live")
    }

    pub fn config(&self) -> S6rcConfig {
        let mut c = S6rcConfig::new(self.root.join("state"));
        c.bin_dir = Some(self.bin.clone());
        c.live_dir = self.live();
        c.scandir = self.root.join("scan");
        c.start_command = self.root.join("vmm");
        c
    }

    pub fn open(&self) -> S6rcApplier {
        S6rcApplier::open(self.config()).unwrap()
    }

    /// Runs an s6-rc program from the bin dir; returns (exit code, stdout).
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

    /// The VM services of the live database, from `s6-rc-db -l LIVE`.
    pub fn db_services(&self) -> Vec<String> {
        let live = self.live();
        let (code, out) = self.s6rc(
            "s6-rc-db",
            &["-l", live.to_str().unwrap(), "list", "services"],
        );
        assert_eq!(code, 0);
        let mut v: Vec<String> = out
            .lines()
            .filter(|l| !l.starts_with("s6rc-"))
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// Brings VMs up with s6-rc and returns their pids.
    pub fn start(&self, names: &[&str]) -> Vec<u32> {
        let live = self.live();
        let mut args = vec!["-l", live.to_str().unwrap(), "-t", "20000", "-u", "change"];
        args.extend_from_slice(names);
        assert_eq!(self.s6rc("s6-rc", &args).0, 0, "s6-rc -u change {names:?}");
        names
            .iter()
            .map(|n| self.pid(n).expect("up after s6-rc -u"))
            .collect()
    }

    /// The pid of a VM's process, from `s6-svstat` on its scandir link.
    pub fn pid(&self, name: &str) -> Option<u32> {
        svstat_pid(&self.link(name))
    }

    pub fn link(&self, name: &str) -> PathBuf {
        self.root.join("scan").join(format!("vm-{name}"))
    }

    /// What `LIVE` points to (`live:s6-rc-init:…` or `live:s6-rc-update:…`).
    pub fn live_target(&self) -> String {
        fs::read_link(self.live()).unwrap().display().to_string()
    }

    pub fn compiled(&self) -> PathBuf {
        fs::read_link(self.live().join("compiled")).unwrap()
    }

    /// The compiled databases in the state directory.
    pub fn dbs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("db-"))
            .collect();
        v.sort();
        v
    }

    /// Waits until `pid` is gone.
    pub fn gone(&self, pid: u32) -> bool {
        wait_for(Duration::from_secs(10), || {
            !vm_catalog_tests::s6::alive(pid)
        })
    }

    /// A bin dir of symlinks to the real s6-rc programs, where `program` is
    /// replaced by a shell script: `script` runs first, then the real one.
    pub fn wrapped_bin(&self, program: &str, script: &str) -> PathBuf {
        let dir = self.root.join("bin");
        fs::create_dir_all(&dir).unwrap();
        for e in fs::read_dir(&self.bin).unwrap() {
            let e = e.unwrap();
            if e.file_name() != program {
                symlink(e.path(), dir.join(e.file_name())).unwrap();
            }
        }
        let real = self.bin.join(program);
        let text = format!("#!/bin/sh\n{script}\nexec {} \"$@\"\n", real.display());
        fs::write(dir.join(program), text).unwrap();
        fs::set_permissions(dir.join(program), fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }
}

pub fn vm(name: &str, providers: &[&str], fingerprint: u64) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: Path::new("/run/vm").join(name).join("config"),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint,
    }
}

pub fn req(generation: u64, vms: Vec<ActiveVm>) -> ApplyRequest {
    ApplyRequest { generation, vms }
}

pub fn names(r: &ApplyReport) -> Vec<String> {
    r.services.keys().map(|n| n.to_string()).collect()
}

pub fn pending(r: &ApplyReport) -> Vec<String> {
    r.restart_pending.iter().map(|n| n.to_string()).collect()
}
