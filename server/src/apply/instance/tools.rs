//! The privileged operations of the s6-instance applier, behind a trait,
//! and [`Commands`], which runs the real `s6-instance-*` programs (Debian's
//! s6 ≥ 2.11.2) through [`crate::apply::process`]: each in its own process
//! group, with a deadline.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::config::DEFAULT_TIMEOUT;
use super::marker::{self, Mark};
use super::name::InstanceName;
use crate::apply::process::{self, MissingProgram, ToolError};
use crate::apply::supervise;

/// The programs the applier runs.
pub const PROGRAMS: [&str; 4] = [
    "s6-instance-create",
    "s6-instance-delete",
    "s6-instance-status",
    "s6-instance-control",
];

/// The operations on one templated service the applier needs. `service` is
/// the templated service directory.
pub trait Instances: Send {
    /// Whether the templated service is supervised: the `s6-svscan` of its
    /// `instance/` directory reads its control FIFO.
    fn supervised(&mut self, service: &Path) -> bool;

    /// The instances, in any order, as `s6-instance-list SERVICE` prints
    /// them: the entries of `SERVICE/instance/` but dot-files (names that
    /// cannot be instance names are skipped).
    fn list(&mut self, service: &Path) -> Result<Vec<InstanceName>, ListError>;

    /// `s6-instance-create [-D] -- SERVICE NAME`: down (with a `down` file)
    /// unless `up`.
    fn create(&mut self, service: &Path, name: &InstanceName, up: bool) -> Result<(), ToolError>;

    /// `s6-instance-delete -- SERVICE NAME`: stops the instance and removes
    /// it (a half-made instance directory too).
    fn delete(&mut self, service: &Path, name: &InstanceName) -> Result<(), ToolError>;

    /// `s6-instance-control -r -- SERVICE NAME`: restarts a running instance.
    fn restart(&mut self, service: &Path, name: &InstanceName) -> Result<(), ToolError>;

    /// The pid of the instance's process if it is up.
    fn pid(&mut self, service: &Path, name: &InstanceName) -> Option<u32>;

    /// Writes the daemon's marker into the instance `mark.instance`.
    fn mark(&mut self, service: &Path, mark: &Mark) -> io::Result<()>;

    /// The daemon's marker in the instance `name`, if it has one.
    fn marked(&mut self, service: &Path, name: &InstanceName) -> Option<Mark>;
}

/// The instances of a templated service could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot list the instances in {}: {error}", .dir.display())]
pub struct ListError {
    /// The templated service's `instance/` directory.
    pub dir: PathBuf,
    /// Why.
    pub error: String,
}

/// Runs the real `s6-instance-*` programs.
#[derive(Debug, Clone)]
pub struct Commands {
    bin: PathBuf,
    timeout: Duration,
}

impl Commands {
    /// Finds the programs in `bin_dir`, or on `PATH` when `None`.
    pub fn find(bin_dir: Option<&Path>) -> Result<Commands, MissingProgram> {
        let env_path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let bin = process::find_programs(bin_dir, &env_path, &PROGRAMS)?;
        Ok(Commands {
            bin,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The deadline of every program.
    pub fn with_timeout(mut self, timeout: Duration) -> Commands {
        self.timeout = timeout;
        self
    }

    fn run(
        &self,
        program: &'static str,
        flags: &[&str],
        service: &Path,
        name: Option<&InstanceName>,
    ) -> Result<Vec<u8>, ToolError> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(flags).arg("--").arg(service);
        if let Some(n) = name {
            cmd.arg(n.as_str());
        }
        tracing::debug!(?cmd, "running {program}");
        let result = process::run(program, cmd, self.timeout);
        if let Err(e @ ToolError::TimedOut { .. }) = &result {
            tracing::error!("{e}");
        }
        result
    }
}

impl Instances for Commands {
    fn supervised(&mut self, service: &Path) -> bool {
        supervise::scanner_listens(&service.join("instance"))
    }

    fn list(&mut self, service: &Path) -> Result<Vec<InstanceName>, ListError> {
        // Read here rather than by running `s6-instance-list`, which does
        // exactly this (after checking that the scanner runs, which
        // `supervised` did): one process fewer per apply.
        let dir = service.join("instance");
        let error = |e: io::Error| ListError {
            dir: dir.clone(),
            error: e.to_string(),
        };
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(error)? {
            let name = entry.map_err(error)?.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with('.')
                && let Ok(n) = InstanceName::new(name)
            {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn create(&mut self, service: &Path, name: &InstanceName, up: bool) -> Result<(), ToolError> {
        let flags: &[&str] = if up { &[] } else { &["-D"] };
        self.run("s6-instance-create", flags, service, Some(name))
            .map(drop)
    }

    fn delete(&mut self, service: &Path, name: &InstanceName) -> Result<(), ToolError> {
        self.run("s6-instance-delete", &[], service, Some(name))
            .map(drop)
    }

    fn restart(&mut self, service: &Path, name: &InstanceName) -> Result<(), ToolError> {
        self.run("s6-instance-control", &["-r"], service, Some(name))
            .map(drop)
    }

    fn pid(&mut self, service: &Path, name: &InstanceName) -> Option<u32> {
        let dir = service.join("instance").join(name.as_str());
        if let Some(pid) = supervise::status_pid(&dir) {
            return pid;
        }
        // Not s6 2.11's status layout: ask the tool.
        let out = self
            .run("s6-instance-status", &["-o", "up,pid"], service, Some(name))
            .ok()?;
        let text = String::from_utf8_lossy(&out);
        let mut it = text.split_whitespace();
        match (it.next(), it.next()) {
            (Some("true"), Some(pid)) => pid.parse().ok(),
            _ => None,
        }
    }

    fn mark(&mut self, service: &Path, mark: &Mark) -> io::Result<()> {
        marker::write(service, mark)
    }

    fn marked(&mut self, service: &Path, name: &InstanceName) -> Option<Mark> {
        marker::read(service, name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_skips_dot_files_and_bad_names_and_names_the_directory_it_cannot_read() {
        let d = tempfile::tempdir().unwrap();
        let mut tools = Commands {
            bin: d.path().to_owned(),
            timeout: DEFAULT_TIMEOUT,
        };
        let e = tools.list(d.path()).unwrap_err();
        assert_eq!(e.dir, d.path().join("instance"));
        for name in ["a", "b", ".s6-svscan", "bad\tname"] {
            std::fs::create_dir_all(d.path().join("instance").join(name)).unwrap();
        }
        let mut listed: Vec<String> = tools
            .list(d.path())
            .unwrap()
            .iter()
            .map(|n| n.to_string())
            .collect();
        listed.sort();
        assert_eq!(listed, ["a", "b"]);
    }

    #[test]
    fn find_reports_the_missing_program() {
        let d = tempfile::tempdir().unwrap();
        let e = Commands::find(Some(d.path())).unwrap_err();
        assert_eq!(e.program, "s6-instance-create");
        assert_eq!(
            e.to_string(),
            format!("s6-instance-create not found in {}", d.path().display())
        );
    }
}
