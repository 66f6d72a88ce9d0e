//! The peer of a connection: who it is, found once at accept.
//!
//! On the host socket the peer is a local process: `SO_PEERCRED` gives the
//! uid, gid and pid of the process that called `connect()`, captured at
//! that moment; `SO_PEERGROUPS` its supplementary groups. Authorization
//! uses only these, never anything the peer says.
//!
//! On a UI VM's listener the peer is **the VM**, whoever its VMM runs as
//! (root, often): which VM is known from the listener the connection came
//! to, and it is never root nor in the admin group. The VMM's credentials
//! are kept for logs only.

use std::os::fd::{AsFd, AsRawFd, RawFd};

use vm_catalog_protocol::VmName;

/// `SO_PEERGROUPS` (Linux ≥ 4.13); libc keeps it private for linux-gnu.
const SO_PEERGROUPS: libc::c_int = 59;
/// Supplementary groups read for one peer at most.
const MAX_GROUPS: usize = 1024;

/// Who is on the other end of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Connection number, for logs.
    pub conn_id: u64,
    /// Effective uid at `connect()`.
    pub uid: u32,
    /// Effective gid at `connect()`.
    pub gid: u32,
    /// Pid at `connect()` (for logs only: pids are reused).
    pub pid: Option<i32>,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// A local process, or a VM.
    pub kind: PeerKind,
}

/// What kind of peer a connection has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerKind {
    /// A process on the host, by its credentials.
    Local,
    /// A UI VM, by its catalog name: it came in on that VM's listener.
    Vm(VmName),
}

impl Peer {
    /// A local peer: the credentials of `socket`'s peer.
    pub fn of(socket: &impl AsFd, conn_id: u64) -> std::io::Result<Peer> {
        let fd = socket.as_fd();
        let cred = rustix::net::sockopt::socket_peercred(fd).map_err(std::io::Error::from)?;
        Ok(Peer {
            conn_id,
            uid: cred.uid.as_raw(),
            gid: cred.gid.as_raw(),
            pid: Some(cred.pid.as_raw_nonzero().get()),
            groups: peer_groups(fd.as_raw_fd()).unwrap_or_default(),
            kind: PeerKind::Local,
        })
    }

    /// The VM `name`, on `socket` (its VMM's credentials, for logs).
    pub fn vm(socket: &impl AsFd, conn_id: u64, name: VmName) -> std::io::Result<Peer> {
        let mut peer = Peer::of(socket, conn_id)?;
        peer.groups = Vec::new();
        peer.kind = PeerKind::Vm(name);
        Ok(peer)
    }

    /// The VM this peer is, if it is one.
    pub fn vm_name(&self) -> Option<&VmName> {
        match &self.kind {
            PeerKind::Local => None,
            PeerKind::Vm(name) => Some(name),
        }
    }

    /// Whether the peer is a VM.
    pub fn is_vm(&self) -> bool {
        self.vm_name().is_some()
    }

    /// Whether the peer is root or a member of `gid` (never a VM, whatever
    /// its VMM runs as).
    pub fn is_root_or_in(&self, gid: Option<u32>) -> bool {
        if self.is_vm() {
            return false;
        }
        self.uid == 0 || gid.is_some_and(|g| self.gid == g || self.groups.contains(&g))
    }
}

fn peer_groups(fd: RawFd) -> std::io::Result<Vec<u32>> {
    let mut groups = vec![0 as libc::gid_t; MAX_GROUPS];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: `groups` is a live buffer of `len` bytes; the kernel writes at
    // most `len` bytes and stores the length written in `len`.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_or_group_member() {
        let mut p = Peer {
            conn_id: 1,
            uid: 1000,
            gid: 1000,
            pid: None,
            groups: vec![27],
            kind: PeerKind::Local,
        };
        assert!(!p.is_root_or_in(None));
        assert!(!p.is_root_or_in(Some(5)));
        assert!(p.is_root_or_in(Some(27)));
        assert!(p.is_root_or_in(Some(1000)));
        p.uid = 0;
        assert!(p.is_root_or_in(None));
        p.kind = PeerKind::Vm("ui".parse().unwrap());
        assert!(!p.is_root_or_in(None), "a VM whose VMM runs as root");
        assert!(!p.is_root_or_in(Some(0)));
    }

    #[tokio::test]
    async fn reads_our_own_credentials_from_a_pair() {
        let (a, _b) = tokio_seqpacket::UnixSeqpacket::pair().unwrap();
        let p = Peer::of(&a, 1).unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(p.uid, unsafe { libc::getuid() });
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let p = Peer::vm(&a, 2, "ui".parse().unwrap()).unwrap();
        assert_eq!(p.vm_name().map(|n| n.as_str()), Some("ui"));
        // SAFETY: getuid cannot fail.
        assert_eq!(p.uid, unsafe { libc::getuid() });
        assert_eq!(p.pid, Some(std::process::id() as i32));
    }
}
