//! The appliers' state files: what each applier remembers across daemon
//! restarts (for s6-rc, what is live and switching; for s6 instances, what
//! the daemon made), as versioned JSON, replaced atomically (write to a
//! temporary file, fsync, rename, fsync the directory).
//!
//! A file is read record by record ([`Records`]): a record that cannot be
//! read (an entry of a map, an optional value) is skipped and named in
//! [`Loaded::skipped`], the rest is kept. A file that is not a JSON object
//! of this version at all (truncated, garbage) is a [`StateError::Parse`]:
//! the applier then reads what is live from the system instead.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// A state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading failed.
    #[error("cannot read {0}")]
    Read(PathBuf, #[source] io::Error),
    /// The contents are not a state file of this version.
    #[error("cannot parse {0}: {1}")]
    Parse(PathBuf, String),
    /// Writing failed.
    #[error("cannot write {0}")]
    Write(PathBuf, #[source] io::Error),
}

/// A state read from its file, and the records of the file that were
/// skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded<T> {
    /// What was read.
    pub state: T,
    /// The records that could not be read (`made["AbC123"]`, `live`).
    pub skipped: Vec<String>,
}

/// The fields of a state file's object, read one record at a time.
#[derive(Debug)]
pub struct Records<'a> {
    object: &'a Map<String, Value>,
    skipped: Vec<String>,
}

impl Records<'_> {
    /// The entries of the map `field` that can be read; a missing field is
    /// empty, an entry that cannot be read is skipped.
    pub fn map<K, V>(&mut self, field: &str) -> BTreeMap<K, V>
    where
        K: DeserializeOwned + Ord,
        V: DeserializeOwned,
    {
        let mut out = BTreeMap::new();
        let entries = match self.object.get(field) {
            None | Some(Value::Null) => return out,
            Some(Value::Object(m)) => m,
            Some(_) => {
                self.skipped.push(field.to_owned());
                return out;
            }
        };
        for (k, v) in entries {
            let key = serde_json::from_value(Value::String(k.clone()));
            match (key, V::deserialize(v)) {
                (Ok(key), Ok(value)) => {
                    out.insert(key, value);
                }
                _ => self.skipped.push(format!("{field}[{}]", quoted(k))),
            }
        }
        out
    }

    /// The optional value `field`: `None` when it is missing, null, or
    /// cannot be read (then skipped).
    pub fn one<V: DeserializeOwned>(&mut self, field: &str) -> Option<V> {
        match self.object.get(field) {
            None | Some(Value::Null) => None,
            Some(v) => V::deserialize(v)
                .inspect_err(|_| self.skipped.push(field.to_owned()))
                .ok(),
        }
    }
}

/// A key as it goes in a log line: quoted, at most 64 characters.
fn quoted(k: &str) -> String {
    let short: String = k.chars().take(64).collect();
    format!("{short:?}")
}

/// An applier's state: read and written through the functions below.
pub trait StateFile: Serialize + Sized {
    /// The format version this build reads and writes.
    const VERSION: u32;
    /// What the state is, for the log line when it cannot be saved.
    const WHAT: &'static str;

    /// The state from the records of a file of [`StateFile::VERSION`].
    fn from_records(records: &mut Records<'_>) -> Self;

    /// Reads `path`; `Ok(None)` when it does not exist. Records that
    /// cannot be read are skipped, named in the result, and logged.
    fn load(path: &Path) -> Result<Option<Loaded<Self>>, StateError> {
        let Some(object) = read_object(path, Self::VERSION)? else {
            return Ok(None);
        };
        let mut records = Records {
            object: &object,
            skipped: Vec::new(),
        };
        let state = Self::from_records(&mut records);
        let skipped = records.skipped;
        if !skipped.is_empty() {
            tracing::warn!(
                file = %path.display(),
                "records of {} that cannot be read were skipped: {}",
                Self::WHAT,
                skipped.join(", ")
            );
        }
        Ok(Some(Loaded { state, skipped }))
    }

    /// Writes `path` atomically.
    fn save(&self, path: &Path) -> Result<(), StateError> {
        save(self, path)
    }

    /// [`StateFile::save`], logging a failure: a state file is an aid to
    /// the next start (which can read what is live from the system), not a
    /// reason to fail an apply.
    fn save_or_warn(&self, path: &Path) {
        if let Err(e) = self.save(path) {
            tracing::warn!(error = %e, "cannot save {}", Self::WHAT);
        }
    }
}

/// The JSON object in `path` if its `version` is `want`; `Ok(None)` when
/// the file does not exist.
fn read_object(path: &Path, want: u32) -> Result<Option<Map<String, Value>>, StateError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Read(path.into(), e)),
    };
    let parse = |why: String| StateError::Parse(path.into(), why);
    let object = match serde_json::from_slice(&bytes) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(parse("not a JSON object".into())),
        Err(e) => return Err(parse(e.to_string())),
    };
    match object.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(want) => Ok(Some(object)),
        Some(v) => Err(parse(format!("unknown version {v}"))),
        None => Err(parse("no version".into())),
    }
}

/// Writes `state` to `path` atomically: a reader (or the next start after
/// a crash) sees the old file or the new one, whole.
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
    drop(f);
    fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}
