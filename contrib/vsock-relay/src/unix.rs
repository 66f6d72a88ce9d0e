//! The host's end of a connection: a Unix stream socket.

use std::ffi::OsString;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The socket a guest's connection to host port `port` goes to:
/// `<uds_path>_<port>`.
pub(crate) fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut path = OsString::from(uds_path.as_os_str());
    path.push(format!("_{port}"));
    PathBuf::from(path)
}

/// Connects to the listener at `path` without blocking: a listener whose
/// backlog is full refuses (`EAGAIN`) rather than stalling the relay.
pub(crate) fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a usable socket path",
        ));
    }
    for (to, from) in addr.sun_path.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: a plain socket(2) call.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a socket we just opened and own alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is a valid sockaddr_un of `len` bytes for the call.
    let r = unsafe {
        libc::connect(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            (&raw const addr).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_port_is_its_own_socket_beside_the_uds_path() {
        assert_eq!(
            port_path(Path::new("/run/vm/ui/vsock"), 22083),
            Path::new("/run/vm/ui/vsock_22083")
        );
    }

    #[test]
    fn connects_without_blocking_and_carries_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock_5");
        let listener = UnixListener::bind(&path).unwrap();
        let mut stream = connect_nonblocking(&path).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        accepted.write_all(b"hi").unwrap();
        stream.set_nonblocking(false).unwrap();
        let mut buf = [0; 2];
        stream.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }

    #[test]
    fn a_port_nobody_listens_on_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = connect_nonblocking(&dir.path().join("vsock_6")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_path_too_long_for_a_socket_is_refused() {
        let long = PathBuf::from(format!("/{}", "x".repeat(200)));
        let err = connect_nonblocking(&long).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
