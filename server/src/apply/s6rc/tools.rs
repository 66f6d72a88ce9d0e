//! The privileged operations of the s6-rc applier, behind a trait.
//!
//! [`Commands`](super::commands::Commands) runs the real s6-rc programs; the
//! unit tests use a fake that emulates them on a temporary directory, so the
//! decision logic (when to init, update, repair, roll back, collect garbage,
//! what is restart-pending) is tested without s6-rc.

use std::io;
use std::path::Path;
use std::time::Duration;

/// The s6-rc operations the applier needs. Every path is absolute.
pub trait S6rc: Send {
    /// `s6-rc-compile DB SOURCE`. `db` must not exist.
    fn compile(&mut self, db: &Path, source: &Path) -> Result<(), ToolError>;

    /// `s6-rc-init -c DB -l LIVE -p PREFIX -t TIMEOUT SCANDIR`.
    fn init(&mut self, init: &Init<'_>) -> Result<(), ToolError>;

    /// `s6-rc-update -b -l LIVE [-f CONVERSIONS] DB`.
    fn update(
        &mut self,
        live: &Path,
        db: &Path,
        conversions: Option<&Path>,
    ) -> Result<(), ToolError>;

    /// The longruns of the live database (`s6-rc-db -l LIVE list longruns`),
    /// s6-rc's internal ones included.
    fn longruns(&mut self, live: &Path) -> Result<Vec<String>, ToolError>;

    /// The pid of `service`'s process if it is up, from its supervisor.
    fn pid(&mut self, live: &Path, service: &str) -> Option<u32>;

    /// Whether an s6-svscan reads `scandir`'s control FIFO.
    fn scanner_running(&mut self, scandir: &Path) -> bool;
}

/// The arguments of `s6-rc-init`.
#[derive(Debug, Clone, Copy)]
pub struct Init<'a> {
    /// The compiled database.
    pub db: &'a Path,
    /// The live directory (created).
    pub live: &'a Path,
    /// The scan-directory prefix.
    pub prefix: &'a str,
    /// The scan directory.
    pub scandir: &'a Path,
    /// How long to wait for the supervisors.
    pub timeout: Duration,
}

/// A failed s6-rc program.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The program could not be started.
    #[error("cannot run {program}")]
    Spawn {
        /// The program.
        program: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The program exited with a non-zero code.
    #[error("{program} exited with code {code}{}", detail(.stderr))]
    Exit {
        /// The program.
        program: &'static str,
        /// Its exit code.
        code: i32,
        /// The end of what it printed on stderr, lines joined with "; ".
        stderr: String,
    },
    /// The program was killed by a signal.
    #[error("{program} was killed by signal {signal}{}", detail(.stderr))]
    Signal {
        /// The program.
        program: &'static str,
        /// The signal.
        signal: i32,
        /// The end of what it printed on stderr.
        stderr: String,
    },
}

fn detail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl ToolError {
    /// The exit code, if the program exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ToolError::Exit { code, .. } => Some(*code),
            ToolError::Spawn { .. } | ToolError::Signal { .. } => None,
        }
    }
}

/// What `s6-rc-update`'s exit code means (s6rc.md §1.4).
pub fn update_code_meaning(code: i32) -> &'static str {
    match code {
        1 => "some state transitions failed, the database was switched",
        2 => "a state transition timed out, the database was switched",
        3 => "the conversion file names a service the live database does not have",
        4 => "invalid database or conversion file",
        5 => "the conversion file names a bundle",
        6 => "the conversion file names a service twice",
        9 => "stopping services failed, the database was not switched",
        10 => "stopping services timed out, the database was not switched",
        100 => "usage error",
        111 => "system call failure (before or after the switch)",
        126 | 127 => "the final s6-rc could not be executed, the database was switched",
        _ => "unknown exit code",
    }
}

/// Keeps the last `max` bytes of `text` (on a char boundary), with lines
/// joined by "; ".
pub fn tail(text: &str, max: usize) -> String {
    let joined = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>();
    let joined = joined.join("; ");
    if joined.len() <= max {
        return joined;
    }
    let mut start = joined.len() - max;
    while !joined.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &joined[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_well() {
        let e = ToolError::Exit {
            program: "s6-rc-update",
            code: 111,
            stderr: tail("s6-rc-update: fatal: x\n\n  y  \n", 100),
        };
        assert_eq!(
            e.to_string(),
            "s6-rc-update exited with code 111: s6-rc-update: fatal: x; y"
        );
        assert_eq!(e.code(), Some(111));
        let e = ToolError::Exit {
            program: "s6-rc-compile",
            code: 1,
            stderr: String::new(),
        };
        assert_eq!(e.to_string(), "s6-rc-compile exited with code 1");
    }

    #[test]
    fn tail_keeps_the_end() {
        assert_eq!(tail("abcdef", 3), "…def");
        assert_eq!(tail("ab\u{e9}", 1), "…");
    }
}
