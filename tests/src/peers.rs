//! Connections that carry other credentials than this process's: what the
//! daemon sees when other local users connect, without other processes.
//!
//! Linux keeps credentials per thread; only the C library makes `setuid`
//! and friends change every thread of a process. [`connect_as`] runs one
//! short-lived thread that changes its own credentials with the raw system
//! calls, connects, and ends: the kernel recorded the thread's effective uid,
//! gid and groups for the socket at `connect()` (`SO_PEERCRED`,
//! `SO_PEERGROUPS`), and the rest of the process never changed. Needs root
//! (`CAP_SETUID`, `CAP_SETGID`).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;

use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::{
    ErrorBody, FrameKind, HANDSHAKE_MAX_FRAME, Hello, LIMIT_MAX_FRAME, MIN_MAX_FRAME,
    SUPPORTED_VERSIONS, Welcome, decode_frame, message,
};

/// Who a connection should come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Creds {
    /// Effective uid.
    pub uid: u32,
    /// Effective gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

impl Creds {
    /// `uid` with the group of the same number and no supplementary groups.
    pub fn user(uid: u32) -> Creds {
        Creds {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }
}

fn check(rc: libc::c_long) -> io::Result<()> {
    if rc == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Connects a blocking `SOCK_SEQPACKET` socket to `path` as `creds`. The
/// path is looked up with root's file-system identity, so the socket's
/// directory may be private to root; the peer credentials are `creds`.
pub fn connect_as(path: &Path, creds: &Creds) -> io::Result<OwnedFd> {
    let addr = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a NUL in the socket path"))?;
    let creds = creds.clone();
    std::thread::spawn(move || -> io::Result<OwnedFd> {
        let keep = libc::c_long::from(-1i32);
        // SAFETY: raw credential system calls on this thread only, with
        // valid arguments (a live buffer of `groups.len()` gids).
        unsafe {
            check(libc::syscall(
                libc::SYS_setgroups,
                creds.groups.len(),
                creds.groups.as_ptr(),
            ))?;
            check(libc::syscall(libc::SYS_setresgid, keep, creds.gid, keep))?;
            check(libc::syscall(libc::SYS_setresuid, keep, creds.uid, keep))?;
            // The real uid stays 0, so these are allowed; they give back
            // root's file-system identity (and capabilities) for the lookup.
            libc::syscall(libc::SYS_setfsuid, 0);
            libc::syscall(libc::SYS_setfsgid, 0);
        }
        // SAFETY: plain socket calls on a descriptor this thread owns; the
        // address is a valid `sockaddr_un` of the given length.
        unsafe {
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sun: libc::sockaddr_un = std::mem::zeroed();
            sun.sun_family = libc::AF_UNIX as libc::sa_family_t;
            let bytes = addr.as_bytes_with_nul();
            if bytes.len() > sun.sun_path.len() {
                return Err(io::Error::other("socket path too long"));
            }
            for (d, s) in sun.sun_path.iter_mut().zip(bytes) {
                *d = *s as libc::c_char;
            }
            let rc = libc::connect(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                (&raw const sun).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            );
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(fd)
        }
    })
    .join()
    .map_err(|_| io::Error::other("the connecting thread panicked"))?
}

/// Says `Hello` on a blocking connection (from [`connect_as`]): the
/// `Welcome`, or the error body that refused it (as an `io::Error`).
pub fn hello(fd: &OwnedFd) -> io::Result<Welcome> {
    use std::os::fd::AsRawFd;
    let hello = Hello {
        client: "peers".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: MIN_MAX_FRAME,
        features: Default::default(),
    };
    let frame = message::hello(&hello).map_err(io::Error::other)?;
    // SAFETY: send and recv on a socket we own, with valid buffers.
    let n = unsafe {
        if libc::send(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            libc::MSG_NOSIGNAL,
        ) < 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; HANDSHAKE_MAX_FRAME as usize];
        let n = libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        buf
    };
    let f = decode_frame(&n, HANDSHAKE_MAX_FRAME).map_err(io::Error::other)?;
    match f.header.kind {
        FrameKind::Welcome => codec::decode(f.body, Compat::Exact).map_err(io::Error::other),
        _ => {
            let e: ErrorBody = codec::decode(f.body, Compat::Exact).map_err(io::Error::other)?;
            Err(io::Error::other(format!(
                "refused: {}: {}",
                e.code.name(),
                e.message
            )))
        }
    }
}

/// Receives one frame on a blocking connection (at most 60 s, a guard
/// against a hang that a loaded machine never reaches): its kind and body.
pub fn recv(fd: &OwnedFd) -> io::Result<(FrameKind, Vec<u8>)> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: 60,
        tv_usec: 0,
    };
    let mut buf = vec![0u8; LIMIT_MAX_FRAME as usize];
    // SAFETY: setsockopt and recv on a socket we own, with valid buffers.
    let n = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    let f = decode_frame(&buf, LIMIT_MAX_FRAME).map_err(io::Error::other)?;
    Ok((f.header.kind, f.body.to_vec()))
}

/// [`connect_as`], as a tokio socket. Must be called within a runtime.
pub fn connect_async_as(path: &Path, creds: &Creds) -> io::Result<tokio_seqpacket::UnixSeqpacket> {
    let fd = connect_as(path, creds)?;
    // SAFETY: a valid socket descriptor we own; tokio needs it non-blocking.
    let rc = unsafe {
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd);
        let flags = libc::fcntl(raw, libc::F_GETFL);
        libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    tokio_seqpacket::UnixSeqpacket::try_from(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_peer_sees_the_threads_credentials_and_this_process_keeps_its_own() {
        if !crate::is_root() {
            return crate::skip("changing credentials needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut l = tokio_seqpacket::UnixSeqpacketListener::bind(&path).unwrap();
            let c = Creds {
                uid: 4242,
                gid: 4343,
                groups: vec![4444],
            };
            let _client = connect_async_as(&path, &c).unwrap();
            let server = l.accept().await.unwrap();
            let cred = server.peer_cred().unwrap();
            assert_eq!((cred.uid(), cred.gid()), (4242, 4343));
        });
        // SAFETY: geteuid cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "only the thread changed");
    }
}
