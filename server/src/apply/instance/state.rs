//! What the s6-instance applier made, across daemon restarts, in
//! `<state-dir>/state.json`:
//!
//! - `made`: every instance the daemon created, with its VM and the
//!   definition it was made for. `confirmed` is false while its
//!   `s6-instance-create` has not succeeded (it is written before the
//!   call): a daemon killed during a create, or a create that failed and
//!   whose cleanup failed too, leaves an entry that the next apply deletes
//!   and makes again. Instances that are not in `made` were made by
//!   someone else: they are left alone.
//! - `running`: restart-pending instances, with the definition they run and
//!   their pid (as for s6-rc, [`crate::apply::restart`]).
//!
//! The file is replaced atomically (write, fsync, rename). A file that
//! cannot be read is set aside: the daemon then knows of no instance it
//! made, and leaves every existing one alone (reported), which is safe.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_catalog_protocol::VmName;

use super::name::InstanceName;
use crate::apply::fingerprint::Fingerprint;
use crate::apply::restart::Running;

/// Version of the file format.
const VERSION: u32 = 1;

/// An instance the daemon made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Made {
    /// Its VM.
    pub vm: VmName,
    /// The definition it was made for (what it starts with now).
    pub definition: Fingerprint,
    /// Its `s6-instance-create` succeeded.
    pub confirmed: bool,
}

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The format version.
    pub version: u32,
    /// The instances the daemon made.
    pub made: BTreeMap<InstanceName, Made>,
    /// Restart-pending instances.
    pub running: BTreeMap<InstanceName, Running>,
}

/// The state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    /// The contents are not a state file of this version.
    #[error("cannot parse {0}")]
    Parse(PathBuf, #[source] serde_json::Error),
    /// Writing failed.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
}

impl State {
    /// An empty state.
    pub fn new() -> State {
        State {
            version: VERSION,
            ..State::default()
        }
    }

    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<State>, StateError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Read(path.into(), e)),
        };
        let state: State =
            serde_json::from_slice(&bytes).map_err(|e| StateError::Parse(path.into(), e))?;
        if state.version != VERSION {
            let e = serde::de::Error::custom(format!("unknown version {}", state.version));
            return Err(StateError::Parse(path.into(), e));
        }
        Ok(Some(state))
    }

    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), StateError> {
        let err = |e| StateError::Write(path.into(), e);
        let tmp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self)
            .map_err(io::Error::other)
            .map_err(err)?;
        let mut f = fs::File::create(&tmp).map_err(err)?;
        f.write_all(&text)
            .and_then(|()| f.sync_all())
            .map_err(err)?;
        fs::rename(&tmp, path).map_err(err)
    }

    /// [`State::save`], logging a failure.
    pub fn save_or_warn(&self, path: &Path) {
        if let Err(e) = self.save(path) {
            tracing::warn!(error = %e, "cannot save the s6-instance applier state");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apply::fingerprint::Hasher;

    #[test]
    fn saves_and_loads_and_rejects_garbage() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        assert_eq!(State::load(&path).unwrap(), None);
        let fp = Hasher::new("t").finish();
        let mut s = State::new();
        let name = InstanceName::new("AbC123").unwrap();
        s.made.insert(
            name.clone(),
            Made {
                vm: "netvm".parse().unwrap(),
                definition: fp,
                confirmed: true,
            },
        );
        s.running.insert(
            name,
            Running {
                definition: fp,
                pid: 7,
            },
        );
        s.save(&path).unwrap();
        assert_eq!(State::load(&path).unwrap(), Some(s));
        fs::write(&path, "{").unwrap();
        assert!(matches!(State::load(&path), Err(StateError::Parse(..))));
        fs::write(&path, r#"{"version":2,"made":{},"running":{}}"#).unwrap();
        assert!(matches!(State::load(&path), Err(StateError::Parse(..))));
    }
}
