//! A fake templated service: instances in memory, pids made up, faults on
//! demand.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use vm_catalogd::apply::instance::marker::Mark;
use vm_catalogd::apply::instance::{InstanceName, Instances, ListError};
use vm_catalogd::apply::process::ToolError;

/// What the fake knows.
#[derive(Debug, Default)]
pub(crate) struct World {
    /// Instance → its pid when up.
    pub instances: BTreeMap<String, Option<u32>>,
    pub next_pid: u32,
    /// Every call, as `program name`.
    pub calls: Vec<String>,
    /// How many of the next creates fail (after making the instance, as a
    /// create that timed out waiting for its supervisor does).
    pub create_faults: usize,
    /// How many of the next deletes fail.
    pub delete_faults: usize,
    /// The templated service is not supervised.
    pub unsupervised: bool,
    /// The daemon's marker in each instance that has one.
    pub marks: BTreeMap<String, Mark>,
}

/// The fake tools (clones share one world).
#[derive(Debug, Clone, Default)]
pub(crate) struct Fake(Arc<Mutex<World>>);

impl Fake {
    pub(crate) fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap()
    }

    /// Starts (or restarts) an instance; returns its pid.
    pub(crate) fn start(&self, name: &str) -> u32 {
        let mut w = self.world();
        w.next_pid += 1;
        let pid = 1000 + w.next_pid;
        w.instances.insert(name.to_owned(), Some(pid));
        pid
    }
}

fn fault(program: &'static str) -> ToolError {
    ToolError::Exit {
        program,
        code: 111,
        stderr: format!("{program}: fatal: injected fault"),
    }
}

impl Instances for Fake {
    fn supervised(&mut self, _: &Path) -> bool {
        !self.world().unsupervised
    }

    fn list(&mut self, _: &Path) -> Result<Vec<InstanceName>, ListError> {
        let mut w = self.world();
        w.calls.push("s6-instance-list".into());
        Ok(w.instances
            .keys()
            .map(|n| InstanceName::new(n).unwrap())
            .collect())
    }

    fn create(&mut self, _: &Path, name: &InstanceName, up: bool) -> Result<(), ToolError> {
        let mut w = self.world();
        w.calls.push(format!("s6-instance-create {name}"));
        if w.create_faults > 0 {
            w.create_faults -= 1;
            w.instances.insert(name.to_string(), None);
            return Err(fault("s6-instance-create"));
        }
        if w.instances.contains_key(name.as_str()) {
            return Err(ToolError::Exit {
                program: "s6-instance-create",
                code: 100,
                stderr: "instance appears to already exist".into(),
            });
        }
        w.instances.insert(name.to_string(), None);
        drop(w);
        if up {
            self.start(name.as_str());
        }
        Ok(())
    }

    fn delete(&mut self, _: &Path, name: &InstanceName) -> Result<(), ToolError> {
        let mut w = self.world();
        w.calls.push(format!("s6-instance-delete {name}"));
        if w.delete_faults > 0 {
            w.delete_faults -= 1;
            return Err(fault("s6-instance-delete"));
        }
        w.instances.remove(name.as_str());
        w.marks.remove(name.as_str());
        Ok(())
    }

    fn restart(&mut self, _: &Path, name: &InstanceName) -> Result<(), ToolError> {
        self.world()
            .calls
            .push(format!("s6-instance-control {name}"));
        if self.world().instances.contains_key(name.as_str()) {
            self.start(name.as_str());
        }
        Ok(())
    }

    fn pid(&mut self, _: &Path, name: &InstanceName) -> Option<u32> {
        self.world().instances.get(name.as_str()).copied().flatten()
    }

    fn mark(&mut self, _: &Path, mark: &Mark) -> std::io::Result<()> {
        let mut w = self.world();
        if !w.instances.contains_key(mark.instance.as_str()) {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        w.marks.insert(mark.instance.to_string(), mark.clone());
        Ok(())
    }

    fn marked(&mut self, _: &Path, name: &InstanceName) -> Option<Mark> {
        self.world().marks.get(name.as_str()).cloned()
    }
}
