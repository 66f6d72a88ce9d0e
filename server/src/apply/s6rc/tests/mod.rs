//! The applier's decisions, on the fake s6-rc: when it inits, updates, does
//! nothing, repairs, rolls back, what it deletes, what it reports and what
//! it remembers across a restart.

use std::fs;
use std::path::{Path, PathBuf};

use vm_catalog_protocol::{ApplyStatus, DiagCode};

use super::fake::{Fake, Fault};
use super::{OpenError, S6rcApplier, S6rcConfig};
use crate::apply::{ActiveVm, Applier, ApplyReport, ApplyRequest};

struct Setup {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    fake: Fake,
}

impl Setup {
    fn new() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(root.join("scan")).unwrap();
        Setup {
            _tmp: tmp,
            root,
            fake: Fake::new(),
        }
    }

    fn config(&self) -> S6rcConfig {
        let mut c = S6rcConfig::new(self.root.join("state"));
        c.live_dir = self.root.join("live");
        c.scandir = self.root.join("scan");
        c
    }

    fn open(&self) -> S6rcApplier<Fake> {
        S6rcApplier::open_with(self.config(), self.fake.clone()).unwrap()
    }

    fn state_entries(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.root.join("state"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n != "state.json" && n != "conversions")
            .collect();
        v.sort();
        v
    }

    fn compiled(&self) -> PathBuf {
        fs::read_link(self.root.join("live/compiled")).unwrap()
    }

    fn link(&self, name: &str) -> PathBuf {
        self.root.join("scan").join(format!("vm-{name}"))
    }
}

fn vm(name: &str, providers: &[&str], fp: u64) -> ActiveVm {
    ActiveVm {
        name: name.parse().unwrap(),
        view: format!("/run/vm/{name}/config").into(),
        providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
        fingerprint: fp,
    }
}

fn req(generation: u64, vms: Vec<ActiveVm>) -> ApplyRequest {
    ApplyRequest { generation, vms }
}

fn services(r: &ApplyReport) -> Vec<String> {
    r.services.keys().map(|n| n.to_string()).collect()
}

fn pending(r: &ApplyReport) -> Vec<String> {
    r.restart_pending.iter().map(|n| n.to_string()).collect()
}

mod adopt;
mod failures;
mod lifecycle;
mod restart;
