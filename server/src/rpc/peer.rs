//! The peer of a connection: its credentials, read once at accept.
//!
//! `SO_PEERCRED` gives the uid, gid and pid of the process that called
//! `connect()`, captured at that moment; `SO_PEERGROUPS` its supplementary
//! groups. Authorization uses only these, never anything the peer says.

use std::os::fd::RawFd;

use tokio_seqpacket::UnixSeqpacket;

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
}

impl Peer {
    /// Reads the credentials of `socket`'s peer.
    pub fn of(socket: &UnixSeqpacket, conn_id: u64) -> std::io::Result<Peer> {
        let cred = socket.peer_cred()?;
        Ok(Peer {
            conn_id,
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
            groups: peer_groups(socket.as_raw_fd()).unwrap_or_default(),
        })
    }

    /// Whether the peer is root or a member of `gid`.
    pub fn is_root_or_in(&self, gid: Option<u32>) -> bool {
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
        };
        assert!(!p.is_root_or_in(None));
        assert!(!p.is_root_or_in(Some(5)));
        assert!(p.is_root_or_in(Some(27)));
        assert!(p.is_root_or_in(Some(1000)));
        p.uid = 0;
        assert!(p.is_root_or_in(None));
    }

    #[tokio::test]
    async fn reads_our_own_credentials_from_a_pair() {
        let (a, _b) = UnixSeqpacket::pair().unwrap();
        let p = Peer::of(&a, 1).unwrap();
        // SAFETY: getuid cannot fail.
        assert_eq!(p.uid, unsafe { libc::getuid() });
        assert_eq!(p.pid, Some(std::process::id() as i32));
    }
}
