//! The appliers' state files: what each applier remembers across daemon
//! restarts (for s6-rc, what is live and switching; for s6 instances, what
//! the daemon made), as versioned JSON, replaced atomically (write, fsync,
//! rename).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A state file could not be read or written.
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

/// An applier's state: read and written through the functions below.
pub trait StateFile: Serialize + DeserializeOwned {
    /// The format version this build reads and writes.
    const VERSION: u32;
    /// What the state is, for the log line when it cannot be saved.
    const WHAT: &'static str;

    /// The format version recorded in the value.
    fn version(&self) -> u32;

    /// Reads `path`; `Ok(None)` when it does not exist.
    fn load(path: &Path) -> Result<Option<Self>, StateError> {
        load(path, Self::VERSION, Self::version)
    }

    /// Writes `path` atomically.
    fn save(&self, path: &Path) -> Result<(), StateError> {
        save(self, path)
    }

    /// [`StateFile::save`], logging a failure: a state file is an aid to
    /// the next start (which can read what is live from the supervision
    /// tree), not a reason to fail an apply.
    fn save_or_warn(&self, path: &Path) {
        if let Err(e) = self.save(path) {
            tracing::warn!(error = %e, "cannot save {}", Self::WHAT);
        }
    }
}

/// Reads `path`; `Ok(None)` when it does not exist. `version` says which
/// format version the contents have; anything but `want` is refused.
pub fn load<T: DeserializeOwned>(
    path: &Path,
    want: u32,
    version: impl Fn(&T) -> u32,
) -> Result<Option<T>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read(path.into(), e)),
    };
    let state: T = serde_json::from_slice(&bytes).map_err(|e| StateError::Parse(path.into(), e))?;
    let got = version(&state);
    if got != want {
        let e = serde::de::Error::custom(format!("unknown version {got}"));
        return Err(StateError::Parse(path.into(), e));
    }
    Ok(Some(state))
}

/// Writes `state` to `path` atomically.
pub fn save<T: Serialize>(state: &T, path: &Path) -> Result<(), StateError> {
    let err = |e| StateError::Write(path.into(), e);
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state)
        .map_err(io::Error::other)
        .map_err(err)?;
    let mut f = fs::File::create(&tmp).map_err(err)?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}
