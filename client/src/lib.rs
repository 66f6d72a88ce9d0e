//! Client library for `vm-catalogd`, the VM catalog daemon.
//!
//! - [`Client`]: async (tokio), one connection, many calls in flight; typed
//!   methods for every protocol call.
//! - [`BlockingClient`]: the same without an async runtime.
//! - [`Watch`]: a subscription that reconnects with backoff, resumes from the
//!   last generation it saw, resyncs after a daemon restart, and keeps a
//!   local [`Mirror`] of the catalog.
//!
//! Both clients share one copy of the protocol logic (the handshake, what
//! each frame means, how a call's frames become its result): they only move
//! the frames, over any [`Endpoint`]: the daemon's `SOCK_SEQPACKET` socket
//! on the host, or, from inside a UI VM, `AF_VSOCK` to the host
//! ([`Client::connect_vsock`]), where frames travel back to back on a byte
//! stream (and a Unix stream socket, [`Client::connect_stream`], carries
//! the same on the host).
//!
//! Cargo feature `cli` (default): the `vm-catalog` command line
//! ([`cli`]), which pulls in clap and serde_json. A program that only uses
//! the library turns it off (`default-features = false`).
//!
//! ```no_run
//! # async fn demo() -> vm_catalog::Result<()> {
//! use vm_catalog::Client;
//! let client = Client::connect(vm_catalog::DEFAULT_SOCKET).await?;
//! match client.get_vm(&"appvm-lynx".parse().unwrap()).await {
//!     Ok(detail) => println!("service {:?}", detail.vm.service),
//!     Err(e) if e.is_not_found() => println!("no such VM"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

pub mod blocking;
pub mod calls;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod endpoint;
pub mod error;
mod session;
mod transport;
pub mod watch;

pub use blocking::{BlockingClient, BlockingWatch};
pub use calls::{RescanReport, VmList};
pub use client::{CallStream, Client};
pub use endpoint::{Endpoint, VSOCK_CID_HOST, VsockAddr, VsockAddrError};
pub use error::{Error, FrameContext, ProtocolError, Result};
pub use session::ConnectOptions;
pub use vm_catalog_protocol as protocol;
pub use watch::{Mirror, Watch, WatchEvent};

/// Where the daemon listens by default.
pub const DEFAULT_SOCKET: &str = "/run/vm-catalog/socket";
