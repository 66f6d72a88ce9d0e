//! `vm-catalog-vsock-relay`: a UI VM's vsock device, for QEMU's
//! `vhost-user-vsock-pci`, with hybrid vsock only (cloud-hypervisor's and
//! Firecracker's scheme): a guest connection to the host (CID 2), port P,
//! becomes a connection to the Unix socket `<uds-path>_<P>`. No AF_VSOCK
//! socket is ever opened on the host.
//!
//! One thread carries every packet: vhost-user-backend's worker thread,
//! whose epoll set also holds the connections' sockets (the other thread
//! only answers the VMM's vhost-user messages). It serves one VMM
//! connection and exits when the VMM goes.
//!
//! Usage: `vm-catalog-vsock-relay --socket PATH --uds-path PATH
//! [--guest-cid N]` (the guest's CID, 3 by default).

mod credit;
mod relay;
mod unix;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::relay::Relay;

#[derive(Debug)]
struct Args {
    socket: PathBuf,
    uds_path: PathBuf,
    guest_cid: u64,
}

const USAGE: &str = "usage: vm-catalog-vsock-relay --socket PATH --uds-path PATH [--guest-cid N]";

fn args(mut it: impl Iterator<Item = std::ffi::OsString>) -> Result<Args, String> {
    let (mut socket, mut uds_path, mut guest_cid) = (None, None, 3u64);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{}: a value is missing", flag.to_string_lossy()))
        };
        match flag.to_str() {
            Some("--socket") => socket = Some(PathBuf::from(value()?)),
            Some("--uds-path") => uds_path = Some(PathBuf::from(value()?)),
            Some("--guest-cid") => {
                let v = value()?;
                guest_cid = v
                    .to_str()
                    .and_then(|v| v.parse().ok())
                    .filter(|&cid| cid > 2 && cid < u64::from(u32::MAX))
                    .ok_or_else(|| {
                        format!("--guest-cid: not a guest CID: {}", v.to_string_lossy())
                    })?;
            }
            _ => {
                return Err(format!(
                    "unknown argument {}\n{USAGE}",
                    flag.to_string_lossy()
                ));
            }
        }
    }
    Ok(Args {
        socket: socket.ok_or(USAGE)?,
        uds_path: uds_path.ok_or(USAGE)?,
        guest_cid,
    })
}

fn run(args: Args) -> Result<(), String> {
    let relay = Arc::new(Mutex::new(
        Relay::new(args.guest_cid, args.uds_path).map_err(|e| format!("eventfd: {e}"))?,
    ));
    let mut daemon = VhostUserDaemon::new(
        "vsock-relay".to_owned(),
        relay.clone(),
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| format!("vhost-user: {e}"))?;
    let handlers = daemon.get_epoll_handlers();
    let [handler] = handlers.as_slice() else {
        return Err(format!("{} worker threads, not one", handlers.len()));
    };
    relay
        .lock()
        .expect("not poisoned")
        .set_epoll(std::os::fd::AsRawFd::as_raw_fd(&**handler));
    daemon
        .serve(&args.socket)
        .map_err(|e| format!("{}: {e}", args.socket.display()))
}

fn main() -> ExitCode {
    let result = args(std::env::args_os().skip(1)).and_then(run);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vm-catalog-vsock-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        args(v.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn arguments_name_the_sockets_and_the_cid() {
        let a = parse(&["--socket", "/s", "--uds-path", "/u", "--guest-cid", "7"]).unwrap();
        assert_eq!(
            (a.socket, a.uds_path, a.guest_cid),
            ("/s".into(), "/u".into(), 7)
        );
        assert_eq!(
            parse(&["--socket", "/s", "--uds-path", "/u"])
                .unwrap()
                .guest_cid,
            3
        );
    }

    #[test]
    fn bad_arguments_are_refused() {
        assert!(parse(&["--socket", "/s"]).is_err());
        assert!(parse(&["--socket", "/s", "--uds-path", "/u", "--guest-cid", "2"]).is_err());
        assert!(parse(&["--socket", "/s", "--uds-path", "/u", "--bogus"]).is_err());
        assert!(parse(&["--socket"]).is_err());
    }
}
