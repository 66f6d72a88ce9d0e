//! The `AF_VSOCK` socket address (`struct sockaddr_vm`), which rustix does
//! not provide, for `connect(2)` (and `bind(2)` in a test).

use rustix::net::AddressFamily;
use rustix::net::addr::{SocketAddrArg, SocketAddrLen, SocketAddrOpaque};

use crate::endpoint::VsockAddr;

/// `struct sockaddr_vm` of `<linux/vm_sockets.h>`.
#[repr(C)]
struct SockaddrVm {
    svm_family: u16,
    svm_reserved1: u16,
    svm_port: u32,
    svm_cid: u32,
    svm_flags: u8,
    svm_zero: [u8; 3],
}

/// A [`VsockAddr`] as a socket address.
#[derive(Debug, Clone, Copy)]
pub(super) struct SockAddr(pub(super) VsockAddr);

// SAFETY: `f` gets a pointer to a `sockaddr_vm` on this stack frame, which
// outlives the call, and exactly its size.
unsafe impl SocketAddrArg for SockAddr {
    unsafe fn with_sockaddr<R>(
        &self,
        f: impl FnOnce(*const SocketAddrOpaque, SocketAddrLen) -> R,
    ) -> R {
        let raw = SockaddrVm {
            svm_family: AddressFamily::VSOCK.as_raw(),
            svm_reserved1: 0,
            svm_port: self.0.port,
            svm_cid: self.0.cid,
            svm_flags: 0,
            svm_zero: [0; 3],
        };
        f(
            (&raw as *const SockaddrVm).cast(),
            size_of::<SockaddrVm>() as SocketAddrLen,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{SocketFlags, SocketType};

    /// The address as the kernel reads it: bind (never connect: nothing
    /// behind this machine's vsock is ours) and read it back.
    #[test]
    fn the_kernel_reads_the_vsock_address_as_written() {
        let socket = || {
            rustix::net::socket_with(
                AddressFamily::VSOCK,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
        };
        let a = match socket() {
            Ok(fd) => fd,
            Err(e) => {
                vm_catalog_tests::skip(&format!("no AF_VSOCK here: {e}"));
                return;
            }
        };
        // Any CID (the local one), any port: the kernel picks one.
        let any = VsockAddr {
            cid: u32::MAX,
            port: u32::MAX,
        };
        rustix::net::bind(&a, &SockAddr(any)).unwrap();
        let port = bound_port(&a);
        assert_ne!(port, u32::MAX);
        // The same port, written by this encoder, is taken: the kernel read
        // the port where it was written.
        let b = socket().unwrap();
        assert_eq!(
            rustix::net::bind(
                &b,
                &SockAddr(VsockAddr {
                    cid: u32::MAX,
                    port
                })
            ),
            Err(rustix::io::Errno::ADDRINUSE)
        );
    }

    fn bound_port(fd: &std::os::fd::OwnedFd) -> u32 {
        let addr = rustix::net::getsockname(fd).unwrap();
        assert_eq!(addr.address_family(), AddressFamily::VSOCK);
        assert_eq!(addr.addr_len() as usize, size_of::<SockaddrVm>());
        // SAFETY: the kernel wrote a `sockaddr_vm` (family and length checked).
        let raw = unsafe { &*addr.as_ptr().cast::<SockaddrVm>() };
        raw.svm_port
    }
}
