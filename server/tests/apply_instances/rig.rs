//! The two rigs every scenario runs on: [`FakeRig`] (the fake in memory)
//! and [`RealRig`] (a real `s6-svscan` supervising a templated service made
//! by `s6-instance-maker`, each `s6-instance-*` program behind a wrapper
//! script that logs the call and injects the faults a scenario asks for).

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use vm_catalog_tests::s6::{self, Svscan, wait_for, write_vm_command};
use vm_catalogd::apply::instance::{
    Commands, InstanceApplier, InstanceConfig, Instances, Naming, tools::PROGRAMS,
};
use vm_catalogd::apply::{ActiveVm, ApplyRequest};

use crate::fake::Fake;

/// What a scenario needs from its rig.
pub(crate) trait Rig {
    /// The tools the applier runs.
    type Tools: Instances;

    /// The temp dir.
    fn root(&self) -> &Path;
    /// The tools.
    fn tools(&self) -> Self::Tools;
    /// The templated service.
    fn service(&self) -> PathBuf {
        self.root().join("scan/vmm")
    }
    /// The instances that exist, sorted.
    fn instances(&self) -> Vec<String>;
    /// The pid of an instance's process, if it runs.
    fn pid(&self, name: &str) -> Option<u32>;
    /// Starts an instance, as `vm-start` does; returns its pid.
    fn start(&self, name: &str) -> u32;
    /// Restarts a running instance, as its user may; returns its new pid.
    fn restart(&self, name: &str) -> u32;
    /// Creates and starts an instance by hand (not through the applier).
    fn create_by_hand(&self, name: &str) -> u32;
    /// Makes the next `n` creates fail after making the instance.
    fn fail_creates(&self, n: usize);
    /// Makes the next `n` deletes fail.
    fn fail_deletes(&self, n: usize);
    /// The create, delete and restart calls so far.
    fn changes_made(&self) -> Vec<String>;
    /// A templated service that nobody supervises.
    fn unsupervised(&self) -> PathBuf;

    /// The applier's configuration on this rig: named by id.
    fn config(&self) -> InstanceConfig {
        let mut c = InstanceConfig::new(self.root().join("state"));
        c.service = self.service();
        c.naming = Naming::Id;
        c
    }
    /// Opens an applier with `config`.
    fn open_with(&self, config: InstanceConfig) -> InstanceApplier<Self::Tools> {
        InstanceApplier::open_with(config, self.tools()).unwrap()
    }
    /// Opens an applier with [`Rig::config`].
    fn open(&self) -> InstanceApplier<Self::Tools> {
        self.open_with(self.config())
    }
}

/// An active VM `name` with the id `id`.
pub(crate) fn vm(name: &str, id: &str, providers: &[&str]) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: format!("/run/vm/by-id/{id}/config").into(),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint: 1,
        id: id.parse().unwrap(),
    }
}

/// A request for `vms`.
pub(crate) fn request(generation: u64, vms: &[ActiveVm]) -> ApplyRequest {
    ApplyRequest {
        generation,
        vms: vms.to_vec(),
    }
}

/// The fake.
pub(crate) struct FakeRig {
    pub fake: Fake,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl FakeRig {
    pub(crate) fn new() -> FakeRig {
        let tmp = tempfile::tempdir().unwrap();
        FakeRig {
            fake: Fake::default(),
            root: tmp.path().to_owned(),
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
    fn instances(&self) -> Vec<String> {
        self.fake.world().instances.keys().cloned().collect()
    }
    fn pid(&self, name: &str) -> Option<u32> {
        self.fake.world().instances.get(name).copied().flatten()
    }
    fn start(&self, name: &str) -> u32 {
        self.fake.start(name)
    }
    fn restart(&self, name: &str) -> u32 {
        self.fake.start(name)
    }
    fn create_by_hand(&self, name: &str) -> u32 {
        self.fake.start(name)
    }
    fn fail_creates(&self, n: usize) {
        self.fake.world().create_faults = n;
    }
    fn fail_deletes(&self, n: usize) {
        self.fake.world().delete_faults = n;
    }
    fn changes_made(&self) -> Vec<String> {
        let w = self.fake.world();
        w.calls
            .iter()
            .filter(|c| !c.starts_with("s6-instance-list"))
            .cloned()
            .collect()
    }
    fn unsupervised(&self) -> PathBuf {
        self.fake.world().unsupervised = true;
        self.root.join("lonely")
    }
}

/// A real `s6-svscan` on `ROOT/scan` supervising the templated service
/// `ROOT/scan/vmm`. Fields drop in order: the scanner (and every instance)
/// first.
pub(crate) struct RealRig {
    _svscan: Svscan,
    root: PathBuf,
    _tmp: tempfile::TempDir,
}

impl RealRig {
    /// A rig, or `None` (after printing why) where s6 is missing.
    pub(crate) fn new() -> Option<RealRig> {
        vm_catalog_tests::require_tool("s6-svscan")?;
        for p in PROGRAMS.iter().chain(&["s6-instance-maker"]) {
            vm_catalog_tests::require_tool(p)?;
        }
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        let vmm = write_vm_command(&root.join("vmm")).unwrap();
        fs::create_dir_all(root.join("scan")).unwrap();
        s6::make_instance_service(&root.join("scan/vmm"), &vmm).unwrap();
        fs::create_dir(root.join("faults")).unwrap();
        wrap_programs(&root);
        let svscan = Svscan::start(&root.join("scan"), 100).unwrap();
        let nested = root.join("scan/vmm/instance");
        assert!(
            wait_for(Duration::from_secs(10), || s6::scanner_listens(&nested)),
            "the templated service's s6-svscan did not start"
        );
        Some(RealRig {
            _svscan: svscan,
            root,
            _tmp: tmp,
        })
    }

    fn wait_pid(&self, name: &str, not: Option<u32>) -> u32 {
        let mut pid = None;
        assert!(
            wait_for(Duration::from_secs(10), || {
                pid = self.pid(name).filter(|p| Some(*p) != not);
                pid.is_some()
            }),
            "instance {name} did not come up"
        );
        pid.unwrap()
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
    fn instances(&self) -> Vec<String> {
        s6::instances(&self.service())
    }
    fn pid(&self, name: &str) -> Option<u32> {
        s6::instance_pid(&self.service(), name)
    }
    fn start(&self, name: &str) -> u32 {
        let old = self.pid(name);
        let out = Command::new("s6-instance-control")
            .arg("-u")
            .arg(self.service())
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.wait_pid(name, old)
    }
    fn restart(&self, name: &str) -> u32 {
        let old = self.pid(name);
        let out = Command::new("s6-instance-control")
            .arg("-r")
            .arg(self.service())
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.wait_pid(name, old)
    }
    fn create_by_hand(&self, name: &str) -> u32 {
        let out = Command::new("s6-instance-create")
            .arg(self.service())
            .arg(name)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        self.wait_pid(name, None)
    }
    fn fail_creates(&self, n: usize) {
        fs::write(self.root.join("faults/s6-instance-create"), n.to_string()).unwrap();
    }
    fn fail_deletes(&self, n: usize) {
        fs::write(self.root.join("faults/s6-instance-delete"), n.to_string()).unwrap();
    }
    fn changes_made(&self) -> Vec<String> {
        fs::read_to_string(self.root.join("calls"))
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                [
                    "s6-instance-create",
                    "s6-instance-delete",
                    "s6-instance-control",
                ]
                .iter()
                .any(|p| l.starts_with(p))
            })
            .map(|l| {
                // "PROGRAM [flags] -- SERVICE NAME" → "PROGRAM NAME"
                let mut w = l.split_whitespace();
                let program = w.next().unwrap_or_default();
                format!(
                    "{program} {}",
                    l.split_whitespace().last().unwrap_or_default()
                )
            })
            .collect()
    }
    fn unsupervised(&self) -> PathBuf {
        let lonely = self.root.join("lonely");
        s6::make_instance_service(&lonely, &self.root.join("vmm")).unwrap();
        lonely
    }
}

/// `ROOT/bin/PROGRAM` for each s6-instance program: logs the call to
/// `ROOT/calls`, fails with exit 111 while `ROOT/faults/PROGRAM` holds a
/// count above zero (decremented), else execs the real program. A failing
/// `s6-instance-create` runs the real one first: it fails after making the
/// instance, as one that timed out waiting for its supervisor does.
fn wrap_programs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir(&bin).unwrap();
    for p in PROGRAMS {
        let real = vm_catalog_tests::which(p).unwrap();
        let script = format!(
            "#!/bin/sh\n\
             echo \"{p} $*\" >> {root}/calls\n\
             f={root}/faults/{p}\n\
             if [ -s \"$f\" ] && [ \"$(cat \"$f\")\" -gt 0 ]; then\n\
               echo $(( $(cat \"$f\") - 1 )) > \"$f\"\n\
               {first}\n\
               echo '{p}: fatal: injected fault' >&2\n\
               exit 111\n\
             fi\n\
             exec {real} \"$@\"\n",
            root = root.display(),
            real = real.display(),
            first = if p == "s6-instance-create" {
                format!("{} \"$@\" >/dev/null 2>&1", real.display())
            } else {
                String::new()
            },
        );
        let path = bin.join(p);
        fs::write(&path, script).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// A VM name.
pub(crate) fn n(s: &str) -> vm_catalog_protocol::VmName {
    s.parse().unwrap()
}
