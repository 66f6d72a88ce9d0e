//! The clients over a byte stream, as a UI VM reaches the daemon: the host
//! side of its vsock connection is a Unix stream socket.
//!
//! `over_daemon.rs` connects to the real daemon's listener for a UI VM, as
//! the VMM does for the guest (every call, both clients, a watch that
//! resumes, the CLI), and `fake.rs` is a scripted daemon for what the real
//! one never sends (`against_fake.rs`:
//! garbage, oversized and cut frames, frames in single bytes, a call given
//! up in the middle of its frame; `newer_server.rs`: a newer server's
//! bodies with fields this client does not know). `AF_VSOCK` itself is not connected here:
//! nothing behind this machine's vsock is ours.

mod against_fake;
mod fake;
mod newer_server;
mod over_daemon;

use std::time::Duration;

/// Awaits `f`, at most 60 s (a guard against a hang, not a measurement).
pub async fn in_time<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen in time"))
}
