//! A fake s6-rc for unit tests: it lays out live directories, `compiled`
//! links and scan-directory links on a temporary directory as s6-rc does,
//! keeps "running" VMs as a pid table, and fails on request — before or
//! after the switch — so that every branch of the applier runs without
//! s6-rc.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::adopt::INTERNAL_SERVICES;
use super::tools::{Init, S6rc, ToolError};

/// How the next updates fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Exit with this code, nothing switched.
    Before(i32),
    /// Switch, remove every link of the live set, exit 111.
    After,
}

/// What the fake knows; shared with the test.
#[derive(Debug, Default)]
pub struct World {
    /// Whether an s6-svscan "runs".
    pub scanner: bool,
    /// Running services and their pids.
    pub pids: BTreeMap<String, u32>,
    /// Every call, as "program args".
    pub calls: Vec<String>,
    /// Fail the next compiles.
    pub fail_compile: bool,
    /// Fail the next `n` updates this way.
    pub update_faults: Vec<Fault>,
    /// The conversion files seen.
    pub conversions: Vec<String>,
    next_pid: u32,
    serial: u32,
}

/// The fake; cloning shares the world.
#[derive(Debug, Clone)]
pub struct Fake(pub Arc<Mutex<World>>);

impl Fake {
    pub fn new() -> Fake {
        Fake(Arc::new(Mutex::new(World {
            scanner: true,
            next_pid: 1000,
            ..World::default()
        })))
    }

    pub fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// "Starts" a VM.
    pub fn start(&self, name: &str) -> u32 {
        let mut w = self.world();
        w.next_pid += 1;
        let pid = w.next_pid;
        w.pids.insert(name.to_owned(), pid);
        pid
    }

    pub fn calls(&self) -> Vec<String> {
        self.world().calls.clone()
    }
}

fn fail(program: &'static str, code: i32) -> ToolError {
    ToolError::Exit {
        program,
        code,
        stderr: format!("{program}: fatal: injected"),
    }
}

fn services_of(db: &Path) -> BTreeSet<String> {
    fs::read_to_string(db.join("services"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Makes a new live dir for `db` next to `live`, points `live` at it and
/// links every service into `scandir`.
fn switch_to(w: &mut World, live: &Path, db: &Path, prefix: &str, scandir: &Path, kind: &str) {
    w.serial += 1;
    let base = live.file_name().unwrap().to_string_lossy().into_owned();
    let dir = live.with_file_name(format!("{base}:s6-rc-{kind}:fake{}", w.serial));
    fs::create_dir_all(dir.join("servicedirs")).unwrap();
    symlink(db, dir.join("compiled")).unwrap();
    symlink(scandir, dir.join("scandir")).unwrap();
    fs::write(dir.join("prefix"), prefix).unwrap();
    fs::write(dir.join("lock"), "").unwrap();
    let old = fs::canonicalize(live).ok();
    let tmp = live.with_file_name(format!("{base}.tmp"));
    symlink(dir.file_name().unwrap(), &tmp).unwrap();
    fs::rename(&tmp, live).unwrap();
    if let Some(old) = old {
        fs::remove_dir_all(old).unwrap();
    }
    unlink_all(prefix, scandir);
    let names = services_of(db);
    for name in INTERNAL_SERVICES.iter().map(|s| s.to_string()).chain(names) {
        let link = scandir.join(format!("{prefix}{name}"));
        symlink(live.join("servicedirs").join(&name), link).unwrap();
    }
}

fn unlink_all(prefix: &str, scandir: &Path) {
    for e in fs::read_dir(scandir).unwrap().flatten() {
        if e.file_name().to_string_lossy().starts_with(prefix)
            && e.file_type().unwrap().is_symlink()
        {
            fs::remove_file(e.path()).unwrap();
        }
    }
}

impl S6rc for Fake {
    fn compile(&mut self, db: &Path, source: &Path) -> Result<(), ToolError> {
        let mut w = self.world();
        w.calls.push(format!("compile {}", db.display()));
        if w.fail_compile {
            return Err(fail("s6-rc-compile", 1));
        }
        if db.exists() {
            return Err(fail("s6-rc-compile", 111));
        }
        let mut names: Vec<String> = fs::read_dir(source)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        fs::create_dir(db).unwrap();
        fs::write(db.join("services"), names.join("\n")).unwrap();
        Ok(())
    }

    fn init(&mut self, init: &Init<'_>) -> Result<(), ToolError> {
        let mut w = self.world();
        w.calls.push(format!("init {}", init.db.display()));
        switch_to(
            &mut w,
            init.live,
            init.db,
            init.prefix,
            init.scandir,
            "init",
        );
        Ok(())
    }

    fn update(
        &mut self,
        live: &Path,
        db: &Path,
        conversions: Option<&Path>,
    ) -> Result<(), ToolError> {
        let mut w = self.world();
        w.calls.push(format!("update {}", db.display()));
        let conv = conversions
            .map(|p| fs::read_to_string(p).unwrap())
            .unwrap_or_default();
        if conversions.is_some() {
            w.conversions.push(conv.clone());
        }
        let fault = if w.update_faults.is_empty() {
            None
        } else {
            Some(w.update_faults.remove(0))
        };
        if let Some(Fault::Before(code)) = fault {
            return Err(fail("s6-rc-update", code));
        }
        let prefix = fs::read_to_string(live.join("prefix")).unwrap();
        let scandir = fs::read_link(live.join("scandir")).unwrap();
        let old = services_of(&fs::read_link(live.join("compiled")).unwrap());
        let new = services_of(db);
        for gone in old.difference(&new) {
            w.pids.remove(gone);
        }
        for line in conv.lines() {
            let name = line.split_whitespace().next().unwrap().to_owned();
            assert!(
                old.contains(&name),
                "the conversion file names {name}, not in the live db"
            );
            if w.pids.contains_key(&name) {
                w.next_pid += 1;
                let pid = w.next_pid;
                w.pids.insert(name, pid);
            }
        }
        switch_to(&mut w, live, db, &prefix, &scandir, "update");
        if fault == Some(Fault::After) {
            unlink_all(&prefix, &scandir);
            return Err(fail("s6-rc-update", 111));
        }
        Ok(())
    }

    fn longruns(&mut self, live: &Path) -> Result<Vec<String>, ToolError> {
        let db: PathBuf = fs::read_link(live.join("compiled")).unwrap();
        let mut v: Vec<String> = INTERNAL_SERVICES.iter().map(|s| s.to_string()).collect();
        v.extend(services_of(&db));
        Ok(v)
    }

    fn pid(&mut self, _live: &Path, service: &str) -> Option<u32> {
        self.world().pids.get(service).copied()
    }

    fn scanner_running(&mut self, _scandir: &Path) -> bool {
        self.world().scanner
    }
}
