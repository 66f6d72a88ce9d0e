//! What the daemon allows each method, in one table: where the call runs,
//! how long it may take, and who may make it.
//!
//! A new method must fill in its row (the match is exhaustive). A test
//! checks the table against the protocol (a stream never runs inline) and
//! against the "who may call" column of `docs/protocol.md`.

use std::time::Duration;

use vm_catalog_protocol::Method;

use super::ctx::Limits;
use super::peer::Peer;

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runs {
    /// In the read loop: quick, and only reads the published snapshot.
    Inline,
    /// In its own task, tracked by call id so `Cancel` can reach it, and
    /// counted against [`Limits::calls_per_connection`].
    Task,
}

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// [`Limits::call_timeout`].
    Call,
    /// [`Limits::stream_timeout`].
    Stream,
    /// [`Limits::rescan_timeout`] (waiting only: the rescan always completes).
    Rescan,
    /// None: the call lasts until cancelled (subscriptions).
    Unbounded,
}

/// Who may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Anyone who may connect.
    Anyone,
    /// Root or a member of the admin group.
    Admin,
}

/// One method's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Where it runs.
    pub runs: Runs,
    /// How long it may take.
    pub deadline: Deadline,
    /// Who may make it.
    pub caller: Caller,
}

/// The table.
pub fn of(method: Method) -> Policy {
    use Caller::{Admin, Anyone};
    use Deadline::{Call, Rescan, Stream, Unbounded};
    use Runs::{Inline, Task};
    let (runs, deadline, caller) = match method {
        Method::Ping => (Inline, Call, Anyone),
        Method::GetInfo => (Inline, Call, Anyone),
        Method::ListVms => (Task, Stream, Anyone),
        Method::GetVm => (Inline, Call, Anyone),
        Method::ListSources => (Inline, Call, Anyone),
        Method::Rescan => (Task, Rescan, Admin),
        Method::Subscribe => (Task, Unbounded, Anyone),
        Method::Cancel => (Inline, Call, Anyone),
    };
    Policy {
        runs,
        deadline,
        caller,
    }
}

impl Deadline {
    /// The duration under `limits`, or `None` for no deadline.
    pub fn under(self, limits: &Limits) -> Option<Duration> {
        match self {
            Deadline::Call => Some(limits.call_timeout),
            Deadline::Stream => Some(limits.stream_timeout),
            Deadline::Rescan => Some(limits.rescan_timeout),
            Deadline::Unbounded => None,
        }
    }
}

impl Caller {
    /// Whether `peer` may call, `admin_gid` being the admin group.
    pub fn admits(self, peer: &Peer, admin_gid: Option<u32>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Admin => peer.is_root_or_in(admin_gid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream sends many frames: in the read loop, it would hold up every
    /// other call of the connection.
    #[test]
    fn streams_run_in_their_own_task() {
        for m in Method::ALL {
            if m.is_streaming() {
                assert_eq!(of(m).runs, Runs::Task, "{m:?}");
            }
        }
    }

    #[test]
    fn who_may_call_is_as_documented() {
        let spec =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/protocol.md"))
                .unwrap();
        for m in Method::ALL {
            let prefix = format!("| {} | `{}` |", m.id(), m.name());
            let row = spec
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no row for {m:?}"));
            let who = row.trim_end_matches('|').rsplit('|').next().unwrap().trim();
            let documented = match who {
                "anyone" => Caller::Anyone,
                "root and the admin group" => Caller::Admin,
                w => panic!("{m:?}: unknown caller {w:?}"),
            };
            assert_eq!(of(m).caller, documented, "{m:?}");
        }
    }

    #[test]
    fn only_admins_may_rescan() {
        let user = Peer {
            conn_id: 1,
            uid: 1000,
            gid: 1000,
            pid: None,
            groups: vec![27],
        };
        assert!(!of(Method::Rescan).caller.admits(&user, None));
        assert!(of(Method::Rescan).caller.admits(&user, Some(27)));
        assert!(of(Method::Subscribe).caller.admits(&user, None));
        assert_eq!(
            of(Method::Subscribe).deadline.under(&Limits::default()),
            None
        );
    }
}
