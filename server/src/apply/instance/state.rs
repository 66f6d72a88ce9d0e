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
//! The file is replaced atomically (write, fsync, rename:
//! [`crate::apply::state_file`]). A file that
//! cannot be read is set aside: the daemon then knows of no instance it
//! made, and leaves every existing one alone (reported), which is safe.

use std::collections::BTreeMap;

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
pub struct InstanceState {
    /// The format version.
    pub version: u32,
    /// The instances the daemon made.
    pub made: BTreeMap<InstanceName, Made>,
    /// Restart-pending instances.
    pub running: BTreeMap<InstanceName, Running>,
}

use crate::apply::state_file::Records;
pub use crate::apply::state_file::{Loaded, StateError, StateFile};

impl StateFile for InstanceState {
    const VERSION: u32 = VERSION;
    const WHAT: &'static str = "the s6-instance applier state";

    /// One record per instance, in `made` and in `running`.
    fn from_records(r: &mut Records<'_>) -> InstanceState {
        InstanceState {
            version: VERSION,
            made: r.map("made"),
            running: r.map("running"),
        }
    }
}

impl InstanceState {
    /// An empty state.
    pub fn new() -> InstanceState {
        InstanceState {
            version: VERSION,
            ..InstanceState::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::apply::fingerprint::Hasher;

    #[test]
    fn saves_and_loads_and_rejects_garbage() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        assert!(InstanceState::load(&path).unwrap().is_none());
        let fp = Hasher::new("t").finish();
        let mut s = InstanceState::new();
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
        assert_eq!(
            InstanceState::load(&path).unwrap().map(|l| l.state),
            Some(s)
        );
        fs::write(&path, "{").unwrap();
        assert!(matches!(
            InstanceState::load(&path),
            Err(StateError::Parse(..))
        ));
        fs::write(&path, r#"{"version":2,"made":{},"running":{}}"#).unwrap();
        assert!(matches!(
            InstanceState::load(&path),
            Err(StateError::Parse(..))
        ));
    }
}
