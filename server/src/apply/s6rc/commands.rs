//! The real s6-rc: runs `s6-rc-compile`, `s6-rc-init`, `s6-rc-update` and
//! `s6-rc-db`, reads supervisors' status files ([`crate::apply::supervise`])
//! and the process table.
//!
//! The programs are found once, in the configured bin dir or on `PATH`, and
//! run by absolute path. Their `PATH` has the directory holding `s6-rc` first,
//! because `s6-rc-update` runs `s6-rc` from `PATH` (s6rc.md §3.13). Each runs
//! with a deadline ([`crate::apply::process`]): a program still running at
//! its deadline is killed with its process group and reported as timed out.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::config::DEFAULT_TIMEOUT;
use super::procs;
use super::tools::{Holder, Init, S6rc, Supervisor, ToolError};
use crate::apply::process::MissingProgram;
use crate::apply::{process, supervise};

/// The programs the applier runs.
const PROGRAMS: [&str; 5] = [
    "s6-rc-compile",
    "s6-rc-init",
    "s6-rc-update",
    "s6-rc",
    "s6-rc-db",
];

/// Deadline of an `s6-svstat` (reading one status file).
const SVSTAT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the real s6-rc programs.
#[derive(Debug, Clone)]
pub struct Commands {
    bin: PathBuf,
    svstat: Option<PathBuf>,
    path: OsString,
    timeout: Duration,
}

impl Commands {
    /// Finds the s6-rc programs in `bin_dir`, or on `PATH` when `None`.
    pub fn find(bin_dir: Option<&Path>) -> Result<Commands, MissingProgram> {
        let env_path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        let bin = process::find_programs(bin_dir, &env_path, &PROGRAMS)?;
        let mut dirs = vec![bin.clone()];
        dirs.extend(std::env::split_paths(&env_path).filter(|d| *d != bin));
        let path = std::env::join_paths(&dirs).unwrap_or(env_path);
        let svstat = std::env::split_paths(&path)
            .map(|d| d.join("s6-svstat"))
            .find(|p| process::executable(p));
        Ok(Commands {
            bin,
            svstat,
            path,
            timeout: DEFAULT_TIMEOUT,
        })
    }

    /// The deadline of every program but `s6-rc-init`, which gets its own
    /// `-t` plus this.
    pub fn with_timeout(mut self, timeout: Duration) -> Commands {
        self.timeout = timeout;
        self
    }

    /// The directory holding the s6-rc programs.
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn command(&self, program: &'static str) -> Command {
        let mut c = Command::new(self.bin.join(program));
        c.env("PATH", &self.path);
        c
    }

    fn run(
        &self,
        program: &'static str,
        cmd: Command,
        timeout: Duration,
    ) -> Result<Vec<u8>, ToolError> {
        tracing::debug!(?cmd, "running {program}");
        let result = process::run(program, cmd, timeout);
        if let Err(e @ ToolError::TimedOut { .. }) = &result {
            tracing::error!("{e}");
        }
        result
    }

    fn pid_from_svstat(&self, dir: &Path) -> Option<u32> {
        let mut c = Command::new(self.svstat.as_ref()?);
        c.arg("-o").arg("up,pid").arg(dir);
        let out = process::run("s6-svstat", c, SVSTAT_TIMEOUT).ok()?;
        let text = String::from_utf8_lossy(&out);
        let mut it = text.split_whitespace();
        match (it.next(), it.next()) {
            (Some("true"), Some(pid)) => pid.parse().ok(),
            _ => None,
        }
    }
}

impl S6rc for Commands {
    fn compile(&mut self, db: &Path, source: &Path) -> Result<(), ToolError> {
        let mut c = self.command("s6-rc-compile");
        c.arg("--").arg(db).arg(source);
        self.run("s6-rc-compile", c, self.timeout).map(drop)
    }

    fn init(&mut self, init: &Init<'_>) -> Result<(), ToolError> {
        let mut c = self.command("s6-rc-init");
        c.arg("-c")
            .arg(init.db)
            .arg("-l")
            .arg(init.live)
            .arg("-p")
            .arg(init.prefix);
        c.arg("-t")
            .arg(init.timeout.as_millis().to_string())
            .arg("--")
            .arg(init.scandir);
        // s6-rc-init gives up by itself after -t; the deadline is a backstop.
        self.run("s6-rc-init", c, init.timeout + self.timeout)
            .map(drop)
    }

    fn update(
        &mut self,
        live: &Path,
        db: &Path,
        conversions: Option<&Path>,
    ) -> Result<(), ToolError> {
        let mut c = self.command("s6-rc-update");
        c.arg("-b").arg("-l").arg(live);
        if let Some(f) = conversions {
            c.arg("-f").arg(f);
        }
        c.arg("--").arg(db);
        self.run("s6-rc-update", c, self.timeout).map(drop)
    }

    fn longruns(&mut self, live: &Path) -> Result<Vec<String>, ToolError> {
        let mut c = self.command("s6-rc-db");
        c.arg("-l").arg(live).arg("list").arg("longruns");
        let out = self.run("s6-rc-db", c, self.timeout)?;
        Ok(String::from_utf8_lossy(&out)
            .lines()
            .map(str::to_owned)
            .collect())
    }

    fn pid(&mut self, live: &Path, service: &str) -> Option<u32> {
        let dir = live.join("servicedirs").join(service);
        match supervise::status_pid(&dir) {
            Some(pid) => pid,
            // No supervisor yet, or not s6 2.11's layout: ask s6-svstat.
            None => self.pid_from_svstat(&dir),
        }
    }

    fn scanner_running(&mut self, scandir: &Path) -> bool {
        supervise::scanner_listens(scandir)
    }

    fn programs_on(&mut self, live: &Path, state: &Path) -> Vec<Holder> {
        procs::programs_on(live, state)
    }

    fn supervisors(&mut self, live: &Path) -> Vec<Supervisor> {
        procs::supervisors(live)
    }

    fn stop_supervisors(&mut self, scandir: &Path, pids: &[u32]) -> usize {
        procs::stop_supervisors(scandir, pids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_reports_the_missing_program() {
        let d = tempfile::tempdir().unwrap();
        let e = Commands::find(Some(d.path())).unwrap_err();
        assert_eq!(e.program, "s6-rc-compile");
        assert_eq!(
            e.to_string(),
            format!("s6-rc-compile not found in {}", d.path().display())
        );
    }
}
