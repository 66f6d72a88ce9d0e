//! Hotplug hints from kernel uevents (netlink `NETLINK_KOBJECT_UEVENT`).
//!
//! The listener joins the kernel's group 1 by default, or the group that
//! mdevd rebroadcasts to (`mdevd -O`). It checks the sender: for group 1
//! only the kernel (netlink port id 0); for a rebroadcast group only root
//! (`SCM_CREDENTIALS` uid 0). Messages are only hints that block devices
//! changed: nothing in them (DEVNAME, DEVPATH) is used; the manager
//! re-reads sysfs. A full receive queue (`ENOBUFS`) means events were lost:
//! the hint says so, and a full reconcile covers it.
//!
//! Bind the listener *before* the first reconcile, so that nothing between
//! the two is missed.

use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
    netlink, sockopt,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Receive buffer asked for (`SO_RCVBUFFORCE`, else `SO_RCVBUF`).
pub const RECV_BUFFER: usize = 16 << 20;
/// Largest message read; the kernel's own limit is 2 KiB of environment.
const MAX_MESSAGE: usize = 8192;

/// The netlink group the kernel broadcasts uevents to.
pub const KERNEL_GROUP: u32 = 1;

/// Which netlink group to listen to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UeventGroup {
    /// The kernel's own broadcasts (group [`KERNEL_GROUP`]).
    Kernel,
    /// A group that a root daemon rebroadcasts to (mdevd's `-O`: a group
    /// number 2..=32, e.g. 3 for Spectrum's `-O4` mask).
    Rebroadcast(u32),
}

/// A group by its number (`--uevent-group`): [`KERNEL_GROUP`] is the
/// kernel's, any other a rebroadcast group (its range is checked when the
/// listener binds).
impl From<u32> for UeventGroup {
    fn from(group: u32) -> UeventGroup {
        if group == KERNEL_GROUP {
            UeventGroup::Kernel
        } else {
            UeventGroup::Rebroadcast(group)
        }
    }
}

impl UeventGroup {
    fn mask(self) -> Option<u32> {
        match self {
            UeventGroup::Kernel => Some(1 << (KERNEL_GROUP - 1)),
            UeventGroup::Rebroadcast(g @ 2..=32) => Some(1 << (g - 1)),
            UeventGroup::Rebroadcast(_) => None,
        }
    }
}

/// Why the listener failed.
#[derive(Debug, thiserror::Error)]
pub enum UeventError {
    /// The group number is out of range.
    #[error("netlink group {0} is out of range (2..=32)")]
    BadGroup(u32),
    /// A socket call failed.
    #[error("{0} failed")]
    Io(&'static str, #[source] std::io::Error),
}

/// "Something changed in block devices": reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Hint {
    /// Accepted block-device events coalesced into this hint.
    pub events: usize,
    /// Events were lost (`ENOBUFS`): reconcile everything.
    pub lost: bool,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UeventStats {
    /// Block events accepted.
    pub accepted: u64,
    /// Events of other subsystems.
    pub other: u64,
    /// Messages from a sender that is not allowed.
    pub rejected_sender: u64,
    /// Malformed or truncated messages.
    pub malformed: u64,
    /// Times the queue overflowed.
    pub overflows: u64,
}

/// A parsed uevent, borrowed from the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uevent<'a> {
    /// `add`, `remove`, `change`, …
    pub action: &'a str,
    /// `SUBSYSTEM=`.
    pub subsystem: Option<&'a str>,
}

/// Parses a kernel-format message: `ACTION@DEVPATH\0KEY=VALUE\0…`.
/// libudev-format messages (`libudev\0…`) and anything else are `None`.
pub fn parse(msg: &[u8]) -> Option<Uevent<'_>> {
    let mut fields = msg.split(|&b| b == 0).filter(|f| !f.is_empty());
    let head = std::str::from_utf8(fields.next()?).ok()?;
    let (action, devpath) = head.split_once('@')?;
    if action.is_empty() || !devpath.starts_with('/') {
        return None;
    }
    let mut subsystem = None;
    for f in fields {
        let f = std::str::from_utf8(f).ok()?;
        if let Some(v) = f.strip_prefix("SUBSYSTEM=") {
            subsystem = Some(v);
        }
    }
    Some(Uevent { action, subsystem })
}

/// Whether a message from netlink port `portid`, with credentials `uid`
/// (when passed), may be trusted for `group`.
pub fn sender_allowed(group: UeventGroup, portid: Option<u32>, uid: Option<u32>) -> bool {
    match group {
        // The kernel sends from port 0; credentials, when present, are root's.
        UeventGroup::Kernel => portid == Some(0) && uid.is_none_or(|u| u == 0),
        UeventGroup::Rebroadcast(_) => uid == Some(0),
    }
}

/// The listener, registered with the tokio reactor.
#[derive(Debug)]
pub struct UeventListener {
    fd: AsyncFd<OwnedFd>,
    rx: Receiver,
}

/// The receiving half's state, apart from the registered fd.
#[derive(Debug)]
struct Receiver {
    group: UeventGroup,
    stats: UeventStats,
    buf: Vec<u8>,
}

enum Received {
    Block,
    Ignored,
    Lost,
}

impl UeventListener {
    /// Opens and binds the socket. Must be called inside a tokio runtime.
    pub fn bind(group: UeventGroup) -> Result<UeventListener, UeventError> {
        let mask = group.mask().ok_or(match group {
            UeventGroup::Rebroadcast(g) => UeventError::BadGroup(g),
            UeventGroup::Kernel => UeventError::BadGroup(KERNEL_GROUP),
        })?;
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(|e| UeventError::Io("socket", e.into()))?;
        if sockopt::set_socket_recv_buffer_size_force(&fd, RECV_BUFFER).is_err() {
            sockopt::set_socket_recv_buffer_size(&fd, RECV_BUFFER)
                .map_err(|e| UeventError::Io("setsockopt SO_RCVBUF", e.into()))?;
        }
        sockopt::set_socket_passcred(&fd, true)
            .map_err(|e| UeventError::Io("setsockopt SO_PASSCRED", e.into()))?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, mask))
            .map_err(|e| UeventError::Io("bind", e.into()))?;
        // SAFETY: an `OwnedFd` is a valid open descriptor that stays the same
        // until it is dropped, which happens only with the `AsyncFd`.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| UeventError::Io("register with the reactor", e.into_parts().1))?;
        Ok(UeventListener {
            fd,
            rx: Receiver {
                group,
                stats: UeventStats::default(),
                buf: vec![0; MAX_MESSAGE],
            },
        })
    }

    /// Counters so far.
    pub fn stats(&self) -> UeventStats {
        self.rx.stats
    }

    /// Sets the receive buffer (tests use a tiny one to provoke `ENOBUFS`).
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<(), UeventError> {
        sockopt::set_socket_recv_buffer_size(self.fd.get_ref(), bytes)
            .map_err(|e| UeventError::Io("setsockopt SO_RCVBUF", e.into()))
    }

    /// Waits for block-device events, then drains every message already
    /// queued, and returns them as one hint.
    pub async fn next(&mut self) -> Result<Hint, UeventError> {
        loop {
            let mut guard = self
                .fd
                .readable()
                .await
                .map_err(|e| UeventError::Io("poll", e))?;
            let mut hint = Hint::default();
            loop {
                match self.rx.recv_one(self.fd.get_ref()) {
                    Ok(Some(Received::Block)) => hint.events += 1,
                    Ok(Some(Received::Lost)) => hint.lost = true,
                    Ok(Some(Received::Ignored)) => {}
                    Ok(None) => {
                        guard.clear_ready();
                        break;
                    }
                    Err(e) => return Err(UeventError::Io("recvmsg", e.into())),
                }
            }
            if hint.events > 0 || hint.lost {
                return Ok(hint);
            }
        }
    }
}

impl Receiver {
    /// Receives one message without blocking; `None` when the queue is empty.
    fn recv_one(&mut self, fd: &OwnedFd) -> Result<Option<Received>, Errno> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut self.buf)];
        let msg = match rustix::net::recvmsg(fd, &mut iov, &mut control, RecvFlags::empty()) {
            Ok(m) => m,
            Err(Errno::AGAIN) => return Ok(None),
            Err(Errno::INTR) => return Ok(Some(Received::Ignored)),
            Err(Errno::NOBUFS) => {
                self.stats.overflows += 1;
                tracing::warn!("uevent queue overflowed: events lost, reconciling everything");
                return Ok(Some(Received::Lost));
            }
            Err(e) => return Err(e),
        };
        let portid = msg
            .address
            .and_then(|a| SocketAddrNetlink::try_from(a).ok())
            .map(|a| a.pid());
        let mut uid = None;
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmCredentials(c) = m {
                uid = Some(c.uid.as_raw());
            }
        }
        if !sender_allowed(self.group, portid, uid) {
            self.stats.rejected_sender += 1;
            tracing::debug!(?portid, ?uid, "uevent from an untrusted sender ignored");
            return Ok(Some(Received::Ignored));
        }
        if msg.flags.contains(rustix::net::ReturnFlags::TRUNC) || msg.bytes > self.buf.len() {
            self.stats.malformed += 1;
            return Ok(Some(Received::Ignored));
        }
        match parse(&self.buf[..msg.bytes]) {
            Some(ev) if ev.subsystem == Some("block") => {
                self.stats.accepted += 1;
                tracing::debug!(action = ev.action, "block uevent");
                Ok(Some(Received::Block))
            }
            Some(_) => {
                self.stats.other += 1;
                Ok(Some(Received::Ignored))
            }
            None => {
                self.stats.malformed += 1;
                Ok(Some(Received::Ignored))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_messages() {
        let m = b"add@/devices/virtual/block/loop1/loop1p1\0ACTION=add\0DEVPATH=/devices/virtual/block/loop1/loop1p1\0SUBSYSTEM=block\0DEVNAME=loop1p1\0DEVTYPE=partition\0PARTN=1\0SEQNUM=834\0";
        assert_eq!(
            parse(m),
            Some(Uevent {
                action: "add",
                subsystem: Some("block")
            })
        );
    }

    #[test]
    fn rejects_libudev_and_garbage() {
        assert_eq!(parse(b"libudev\0\xfe\xed\xca\xfe"), None);
        assert_eq!(parse(b""), None);
        assert_eq!(parse(b"add@relative\0SUBSYSTEM=block\0"), None);
        assert_eq!(parse(b"@/x\0"), None);
        assert_eq!(parse(b"add@/x\0SUBSYSTEM=\xff\0"), None);
    }

    #[test]
    fn sender_checks() {
        use UeventGroup::*;
        assert!(sender_allowed(Kernel, Some(0), Some(0)));
        assert!(sender_allowed(Kernel, Some(0), None));
        // A root process forging on group 1 has its own port id.
        assert!(!sender_allowed(Kernel, Some(4242), Some(0)));
        assert!(!sender_allowed(Kernel, None, Some(0)));
        assert!(sender_allowed(Rebroadcast(3), Some(777), Some(0)));
        assert!(!sender_allowed(Rebroadcast(3), Some(777), Some(1000)));
        assert!(!sender_allowed(Rebroadcast(3), Some(777), None));
    }

    #[test]
    fn group_masks() {
        assert_eq!(UeventGroup::Kernel.mask(), Some(1));
        assert_eq!(UeventGroup::from(1), UeventGroup::Kernel);
        assert_eq!(UeventGroup::from(3), UeventGroup::Rebroadcast(3));
        assert_eq!(UeventGroup::Rebroadcast(3).mask(), Some(4));
        assert_eq!(UeventGroup::Rebroadcast(0).mask(), None);
        assert_eq!(UeventGroup::Rebroadcast(33).mask(), None);
    }
}
