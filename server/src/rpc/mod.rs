//! The socket server: accept, limit, authenticate, and serve calls.
//!
//! [`serve`] is the whole server: it takes a bound listener and the shared
//! [`Ctx`], and returns when `ctx.shutdown` is cancelled and every connection
//! has closed. [`ui_vm`] serves the UI VMs' listeners the same way.
//!
//! A connection comes in through the one accept loop (`accept`), which
//! asks the listener's admission policy what to do with it. A frame goes
//! up this stack: the connection's `transport` receives it whole (one
//! datagram, or cut from a UI VM's byte stream); `session` runs the
//! handshake (`handshake`) and the read loop, which decodes each frame,
//! looks up its method's `policy` row once and runs the call inline or in
//! its own task as the row says; `service` authorizes it, bounds its time
//! and dispatches it to one of `handlers`; the handler answers through
//! `send`. Failures become wire errors in `error`'s one exhaustive match.
//! `stop` tells connections to end with a `Goodbye`.

mod accept;
mod admission;
mod ctx;
mod error;
mod evict;
mod handlers;
mod handshake;
mod in_flight;
pub mod listener;
mod peer;
mod policy;
mod send;
mod service;
mod session;
mod stop;
mod transport;
pub mod ui_vm;

pub use accept::serve;
// The reply ledger and its share are what tests read through `Ctx::replies`.
pub use admission::{Ledger, Share};
pub use ctx::{Ctx, Limits, ServerInfo};
