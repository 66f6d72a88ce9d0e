//! What the applier remembers across daemon restarts, in
//! `<state-dir>/state.json`.
//!
//! - `live`: the database that is live, with its tree fingerprint and each
//!   VM's definition fingerprint (what a start of that VM runs now);
//! - `next`: the database an init or update is switching to, written before
//!   the switch, so that a daemon killed during `s6-rc-update` still knows
//!   what it switched to;
//! - `running`: VMs that run a definition other than the live one (the
//!   restart-pending VMs), with the definition they run and their pid: a VM
//!   whose pid changed has restarted, on the live definition.
//!
//! The file is replaced atomically (write, fsync, rename:
//! [`crate::apply::state_file`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use vm_catalog_protocol::VmName;

use crate::apply::fingerprint::Fingerprint;

/// Version of the file format.
const VERSION: u32 = 1;

/// One compiled database and what is in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbRecord {
    /// The compiled database (absolute, not a symlink).
    pub database: PathBuf,
    /// Its rendered source directory, if the applier made it.
    pub source: Option<PathBuf>,
    /// The tree fingerprint; `None` when unknown (a database the applier
    /// adopted without a record of it).
    pub tree: Option<Fingerprint>,
    /// VM name → definition fingerprint (`None` when unknown).
    pub services: BTreeMap<VmName, Option<Fingerprint>>,
}

pub use crate::apply::restart::Running;

/// The state file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct S6rcState {
    /// The format version.
    pub version: u32,
    /// The live database.
    pub live: Option<DbRecord>,
    /// The database being switched to.
    pub next: Option<DbRecord>,
    /// Restart-pending VMs.
    pub running: BTreeMap<VmName, Running>,
}

use crate::apply::state_file::Records;
pub use crate::apply::state_file::{Loaded, StateError, StateFile};

impl StateFile for S6rcState {
    const VERSION: u32 = VERSION;
    const WHAT: &'static str = "the s6-rc applier state";

    /// `live` and `next` are one record each (a database record with a
    /// service missing would be wrong), `running` one per VM.
    fn from_records(r: &mut Records<'_>) -> S6rcState {
        S6rcState {
            version: VERSION,
            live: r.one("live"),
            next: r.one("next"),
            running: r.map("running"),
        }
    }
}

impl S6rcState {
    /// An empty state.
    pub fn new() -> S6rcState {
        S6rcState {
            version: VERSION,
            ..S6rcState::default()
        }
    }

    /// The VMs of the live database.
    pub fn live_services(&self) -> impl Iterator<Item = &VmName> {
        self.live.iter().flat_map(|r| r.services.keys())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::apply::fingerprint::Hasher;

    #[test]
    fn saves_and_loads() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        assert!(S6rcState::load(&path).unwrap().is_none());
        let fp = Hasher::new("t").finish();
        let mut s = S6rcState::new();
        s.live = Some(DbRecord {
            database: "/s/db-1-0".into(),
            source: Some("/s/src-1-0".into()),
            tree: Some(fp),
            services: [
                ("a".parse().unwrap(), Some(fp)),
                ("b".parse().unwrap(), None),
            ]
            .into(),
        });
        s.running.insert(
            "a".parse().unwrap(),
            Running {
                definition: fp,
                pid: 12,
            },
        );
        s.save(&path).unwrap();
        let back = S6rcState::load(&path).unwrap().unwrap();
        assert_eq!(back.state, s);
        assert!(back.skipped.is_empty());
    }

    #[test]
    fn a_bad_record_is_skipped_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        fs::write(
            &path,
            r#"{"version":1,"live":{"database":7},"next":null,
                "running":{"a":{"definition":"0000000000000000000000000000000000000000000000000000000000000000","pid":3},
                           "../x":{"definition":"00","pid":4},"b":{"pid":"no"}}}"#,
        )
        .unwrap();
        let back = S6rcState::load(&path).unwrap().unwrap();
        assert_eq!(back.state.live, None);
        assert_eq!(
            back.state
                .running
                .keys()
                .map(VmName::as_str)
                .collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(
            back.skipped,
            ["live", r#"running["../x"]"#, r#"running["b"]"#]
        );
    }

    #[test]
    fn rejects_garbage_and_other_versions() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("state.json");
        fs::write(&path, "{").unwrap();
        assert!(matches!(S6rcState::load(&path), Err(StateError::Parse(..))));
        fs::write(
            &path,
            r#"{"version":99,"live":null,"next":null,"running":{}}"#,
        )
        .unwrap();
        assert!(matches!(S6rcState::load(&path), Err(StateError::Parse(..))));
    }
}
