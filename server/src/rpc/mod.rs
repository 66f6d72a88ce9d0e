//! The socket server: accept, limit, authenticate, and serve calls.
//!
//! [`serve`] is the whole server: it takes a bound listener and the shared
//! [`Ctx`], and returns when `ctx.shutdown` is cancelled and every connection
//! has closed.
//!
//! A frame goes up this stack: [`transport`] receives it (a datagram
//! through [`recv`], or cut from a UI VM's byte stream); [`session`] runs the
//! handshake ([`handshake`]) and the read loop, which decodes each frame and
//! runs the call inline or in its own task as [`policy`] says; [`service`]
//! authorizes it, bounds its time and dispatches it to one of [`handlers`];
//! the handler answers through [`send`]. Failures become wire errors in
//! [`error`]'s one exhaustive match.

pub mod accept;
pub mod admission;
pub mod ctx;
pub mod error;
pub mod evict;
pub mod handlers;
pub mod handshake;
pub mod in_flight;
pub mod listener;
pub mod peer;
pub mod policy;
pub mod recv;
pub mod send;
pub mod service;
pub mod session;
pub mod transport;
pub mod ui_vm;

pub use accept::serve;
pub use admission::{Claim, Ledger, Share, Tenant};
pub use ctx::{Ctx, Limits, ServerInfo, Stats};
