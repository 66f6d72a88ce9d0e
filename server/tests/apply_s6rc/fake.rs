//! A fake s6-rc: it lays out live directories, `compiled` links and
//! scan-directory links on a temporary directory as s6-rc does, keeps
//! "running" VMs as a pid table, and fails on request — before the switch,
//! or after it because a scan-directory name is taken during the update, as
//! real s6-rc-update does — so that every scenario also runs where the
//! decision logic is all that is tested.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use vm_catalogd::apply::s6rc::live::{Live, LiveLock, Lock};
use vm_catalogd::apply::s6rc::tools::{Holder, Init, S6rc, Supervisor, ToolError};

/// s6-rc's own longruns.
const INTERNAL: [&str; 2] = ["s6rc-oneshot-runner", "s6rc-fdholder"];

/// How the next update fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Exit with this code, nothing switched.
    Before(i32),
    /// Someone takes this scan-directory name just before the update: it
    /// fails after its switch, every link of the live set removed.
    TakeName(String),
}

/// What the fake knows; shared with the test.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// Whether an s6-svscan "runs".
    pub scanner: bool,
    /// Running services and their pids.
    pub pids: BTreeMap<String, u32>,
    /// Every call, as "program args".
    pub calls: Vec<String>,
    /// Fail the next compiles.
    pub fail_compile: bool,
    /// How the next updates fail, in order.
    pub update_faults: Vec<Fault>,
    /// Programs "working on the live directory", for so many more looks.
    pub busy: Option<(Vec<Holder>, usize)>,
    /// What the busy program (an update whose daemon was killed) switches
    /// to when it is done.
    pub orphan: Option<PathBuf>,
    /// Supervisors "running".
    pub supervisors: Vec<Supervisor>,
    /// Someone takes the live lock as soon as each update is done (and
    /// holds it in `held`).
    pub lock_after_update: bool,
    /// That lock.
    pub held: Option<LiveLock>,
    next_pid: u32,
    serial: u32,
}

/// The fake; cloning shares the world.
#[derive(Debug, Clone)]
pub(crate) struct Fake(pub Arc<Mutex<World>>);

impl Fake {
    pub(crate) fn new() -> Fake {
        Fake(Arc::new(Mutex::new(World {
            scanner: true,
            next_pid: 1000,
            ..World::default()
        })))
    }

    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// "Starts" a VM (again): a new pid.
    pub(crate) fn start(&self, name: &str) -> u32 {
        let mut w = self.world();
        w.next_pid += 1;
        let pid = w.next_pid;
        w.pids.insert(name.to_owned(), pid);
        pid
    }
}

fn fail(program: &'static str, code: i32) -> ToolError {
    ToolError::Exit {
        program,
        code,
        stderr: format!("{program}: fatal: injected"),
    }
}

/// The VM services of a fake database.
pub(crate) fn services_of(db: &Path) -> BTreeSet<String> {
    fs::read_to_string(db.join("services"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn longruns(db: &Path) -> Vec<String> {
    let mut v: Vec<String> = INTERNAL.iter().map(|s| s.to_string()).collect();
    v.extend(services_of(db));
    v
}

/// Makes a new live dir for `db` next to `live` and points `live` at it.
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
}

/// Links every longrun of `db` into `scandir`, as s6-rc does; a name that
/// is taken fails the whole lot: every link made is removed again.
fn link_all(live: &Path, db: &Path, prefix: &str, scandir: &Path) -> bool {
    let names = longruns(db);
    for (i, name) in names.iter().enumerate() {
        let link = scandir.join(format!("{prefix}{name}"));
        if symlink(live.join("servicedirs").join(name), &link).is_err() {
            for done in &names[..i] {
                let _ = fs::remove_file(scandir.join(format!("{prefix}{done}")));
            }
            return false;
        }
    }
    true
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
        if !link_all(init.live, init.db, init.prefix, init.scandir) {
            // s6-rc-init cleans up after itself.
            fs::remove_dir_all(fs::canonicalize(init.live).unwrap()).unwrap();
            fs::remove_file(init.live).unwrap();
            return Err(fail("s6-rc-init", 111));
        }
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
        let fault = (!w.update_faults.is_empty()).then(|| w.update_faults.remove(0));
        let prefix = fs::read_to_string(live.join("prefix")).unwrap();
        let scandir = fs::read_link(live.join("scandir")).unwrap();
        match &fault {
            Some(Fault::Before(code)) => return Err(fail("s6-rc-update", *code)),
            Some(Fault::TakeName(n)) => {
                let _ = symlink("/nonexistent", scandir.join(format!("{prefix}{n}")));
            }
            None => {}
        }
        let old_db = fs::read_link(live.join("compiled")).unwrap();
        let (old, new) = (services_of(&old_db), services_of(db));
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
        // Leaving the old database unlinks each of its names, whoever's.
        for name in longruns(&old_db) {
            let _ = fs::remove_file(scandir.join(format!("{prefix}{name}")));
        }
        if !link_all(live, db, &prefix, &scandir) {
            return Err(fail("s6-rc-update", 111));
        }
        if w.lock_after_update
            && let Lock::Taken(l) = Live::new(live, &scandir, &prefix).try_lock()
        {
            w.held = Some(l);
        }
        Ok(())
    }

    fn longruns(&mut self, live: &Path) -> Result<Vec<String>, ToolError> {
        let db: PathBuf = fs::read_link(live.join("compiled")).unwrap();
        Ok(longruns(&db))
    }

    fn pid(&mut self, _live: &Path, service: &str) -> Option<u32> {
        self.world().pids.get(service).copied()
    }

    fn scanner_running(&mut self, _scandir: &Path) -> bool {
        self.world().scanner
    }

    fn programs_on(&mut self, live: &Path, _state: &Path) -> Vec<Holder> {
        let mut w = self.world();
        match w.busy.take() {
            Some((holders, looks)) if looks > 0 => {
                w.busy = Some((holders.clone(), looks - 1));
                holders
            }
            _ => {
                let orphan = w.orphan.take();
                drop(w);
                if let Some(db) = orphan {
                    self.update(live, &db, None).unwrap();
                }
                Vec::new()
            }
        }
    }

    fn supervisors(&mut self, _live: &Path) -> Vec<Supervisor> {
        self.world().supervisors.clone()
    }

    fn stop_supervisors(&mut self, _scandir: &Path, pids: &[u32]) -> usize {
        let mut w = self.world();
        let before = w.supervisors.len();
        w.supervisors.retain(|s| !pids.contains(&s.pid));
        before - w.supervisors.len()
    }
}
