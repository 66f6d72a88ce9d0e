//! What the daemon allows each method, in one table: where the call runs,
//! how long it may take, who on the host may make it, and whether a UI VM
//! may (a VM is read-only).
//!
//! A new method must fill in its row (the match is exhaustive). A test
//! checks the table against the protocol (a stream never runs inline
//! whatever its length) and
//! against the "who may call" column of `docs/protocol.md`.

use std::time::Duration;

use vm_catalog_protocol::Method;

use super::ctx::Limits;
use super::peer::{Peer, PeerKind};

/// Where a call runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runs {
    /// In the read loop: quick, and only reads the published snapshot.
    Inline,
    /// In its own task, tracked by call id so `Cancel` can reach it, and
    /// counted against [`Limits::calls_per_connection`].
    Task,
    /// In the read loop when its whole answer is one item and its end (a
    /// `ListVms` of a small catalog: over as soon as a unary call is, with
    /// nothing for `Cancel` to reach), else in its own task.
    TaskUnlessOneFrame,
}

/// How long a call may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
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
pub(super) enum Caller {
    /// Anyone who may connect.
    Anyone,
    /// Root or a member of the admin group.
    Admin,
}

/// Whether a UI VM may make a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VmCaller {
    /// Yes: it reads the catalog.
    Allowed,
    /// No (`PermissionDenied`): it would change the host.
    Denied,
}

/// One method's row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Policy {
    /// Where it runs.
    pub runs: Runs,
    /// How long it may take.
    pub deadline: Deadline,
    /// Who on the host may make it.
    pub caller: Caller,
    /// Whether a UI VM may make it.
    pub vm: VmCaller,
}

pub(super) fn of(method: Method) -> Policy {
    use Caller::{Admin, Anyone};
    use Deadline::{Call, Rescan, Stream, Unbounded};
    use Runs::{Inline, Task, TaskUnlessOneFrame};
    use VmCaller::{Allowed, Denied};
    let (runs, deadline, caller, vm) = match method {
        Method::Ping => (Inline, Call, Anyone, Allowed),
        Method::GetInfo => (Inline, Call, Anyone, Allowed),
        Method::ListVms => (TaskUnlessOneFrame, Stream, Anyone, Allowed),
        Method::GetVm => (Inline, Call, Anyone, Allowed),
        Method::ListSources => (Inline, Call, Anyone, Allowed),
        Method::Rescan => (Task, Rescan, Admin, Denied),
        Method::Subscribe => (Task, Unbounded, Anyone, Allowed),
        Method::Cancel => (Inline, Call, Anyone, Allowed),
    };
    Policy {
        runs,
        deadline,
        caller,
        vm,
    }
}

impl Deadline {
    /// The duration under `limits`, or `None` for no deadline.
    pub(super) fn under(self, limits: &Limits) -> Option<Duration> {
        match self {
            Deadline::Call => Some(limits.call_timeout),
            Deadline::Stream => Some(limits.stream_timeout),
            Deadline::Rescan => Some(limits.rescan_timeout),
            Deadline::Unbounded => None,
        }
    }
}

impl Caller {
    /// Whether `peer` may call, `admin_gid` being the admin group (a VM
    /// never counts as root or the admin group).
    pub(super) fn admits(self, peer: &Peer, admin_gid: Option<u32>) -> bool {
        match self {
            Caller::Anyone => true,
            Caller::Admin => peer.is_root_or_in(admin_gid),
        }
    }
}

impl Policy {
    /// Whether `peer` may make the call: a VM by the VM column, a local
    /// peer by its credentials.
    pub(super) fn admits(&self, peer: &Peer, admin_gid: Option<u32>) -> bool {
        match peer.kind {
            PeerKind::Vm(_) => self.vm == VmCaller::Allowed && self.caller == Caller::Anyone,
            PeerKind::Local => self.caller.admits(peer, admin_gid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream sends many frames: in the read loop, it would hold up every
    /// other call of the connection. Only one whose answer turns out to be
    /// one frame (and its end) may run there.
    #[test]
    fn streams_run_in_their_own_task() {
        for m in Method::ALL {
            if m.is_streaming() {
                assert_ne!(of(m).runs, Runs::Inline, "{m:?}");
            } else {
                assert_ne!(of(m).runs, Runs::TaskUnlessOneFrame, "{m:?}");
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
            let cells: Vec<&str> = row
                .trim_end_matches('|')
                .split('|')
                .map(str::trim)
                .collect();
            let documented = match cells[5] {
                "anyone" => Caller::Anyone,
                "root and the admin group" => Caller::Admin,
                w => panic!("{m:?}: unknown caller {w:?}"),
            };
            assert_eq!(of(m).caller, documented, "{m:?}");
            let vm = match cells[6] {
                "yes" => VmCaller::Allowed,
                "no" => VmCaller::Denied,
                w => panic!("{m:?}: unknown VM column {w:?}"),
            };
            assert_eq!(of(m).vm, vm, "{m:?}");
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
            kind: PeerKind::Local,
        };
        let mut vm = user.clone();
        vm.uid = 0;
        vm.kind = PeerKind::Vm("ui".parse().unwrap());
        assert!(
            !of(Method::Rescan).admits(&vm, None),
            "a VM whose VMM is root"
        );
        assert!(of(Method::Subscribe).admits(&vm, None));
        assert!(of(Method::Cancel).admits(&vm, None));
        assert!(!of(Method::Rescan).caller.admits(&user, None));
        assert!(of(Method::Rescan).caller.admits(&user, Some(27)));
        assert!(of(Method::Subscribe).caller.admits(&user, None));
        assert_eq!(
            of(Method::Subscribe).deadline.under(&Limits::default()),
            None
        );
    }
}
