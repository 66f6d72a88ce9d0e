//! The RPC server in-process (the real `rpc::serve` on a real socket in a
//! temp dir), driven by the real client library and by raw datagrams, with a
//! scripted pipeline behind the `Pipeline` trait. The real daemon binary is
//! tested end to end in `daemon_e2e.rs`.
//!
//! - `calls`: calls and their errors, the in-flight limit.
//! - `subscriptions`: snapshots, batches, resumption, lag, cancel, shutdown.
//! - `connections`: the handshake, bad datagrams, connection limits, peers
//!   that stop reading.
//! - `malformed`: every malformed input of `docs/protocol.md` §9, answered
//!   as the table says.
//! - `local_users`: other uids against root and each other (admission, the
//!   idle timeout).
//! - `unread_replies`: what peers that never read can make the daemon hold.
//! - `ui_vm`: a UI VM listener beside the host socket: its own budgets.

mod calls;
mod connections;
mod local_users;
mod malformed;
mod server;
mod subscriptions;
mod ui_vm;
mod unread_replies;
