//! The marker in every instance the daemon made:
//! `<service>/instance/<name>/.vm-catalogd-instance`, a small JSON file
//! naming the instance, its VM and the definition it was made for.
//!
//! It lives and goes with the instance (`s6-instance-delete` removes the
//! directory), so it says which instances are the daemon's even when
//! `state.json` is lost or damaged: such an instance is adopted as it is
//! (never restarted), where an unmarked one is left alone. s6 ignores files
//! it does not know in a service directory. Written after a create
//! succeeds and when the definition changes, replaced atomically.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vm_catalog_protocol::VmName;

use super::name::InstanceName;
use crate::apply::fingerprint::Fingerprint;

/// The marker's file name, in the instance's service directory.
pub const MARKER: &str = ".vm-catalogd-instance";

/// What a marker says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The instance it is in (a copied marker names another one).
    pub instance: InstanceName,
    /// Its VM.
    pub vm: VmName,
    /// The definition it was made for.
    pub definition: Fingerprint,
}

/// The service directory of the instance `name` of `service`.
pub fn instance_dir(service: &Path, name: &InstanceName) -> PathBuf {
    service.join("instance").join(name.as_str())
}

/// Writes `mark` into its instance of `service`, atomically.
pub fn write(service: &Path, mark: &Mark) -> io::Result<()> {
    let dir = instance_dir(service, &mark.instance);
    let tmp = dir.join(format!("{MARKER}.new"));
    let text = serde_json::to_vec(mark).map_err(io::Error::other)?;
    let mut f = fs::File::create(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, dir.join(MARKER))
}

/// The marker of the instance `name` of `service`, when it has a readable
/// one that names it.
pub fn read(service: &Path, name: &InstanceName) -> Option<Mark> {
    let path = instance_dir(service, name).join(MARKER);
    if !fs::symlink_metadata(&path).ok()?.is_file() {
        return None;
    }
    let bytes = fs::read(&path).ok()?;
    let mark: Mark = serde_json::from_slice(&bytes).ok()?;
    (mark.instance == *name).then_some(mark)
}
