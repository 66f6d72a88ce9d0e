//! The RPC server in-process (the real `rpc::serve` on a real socket in a
//! temp dir), driven by the real client library and by raw datagrams, with a
//! scripted pipeline behind the `Pipeline` trait. The real daemon binary is
//! tested end to end in `daemon_e2e.rs`.
//!
//! - `calls`: calls and their errors, the in-flight limit.
//! - `subscriptions`: snapshots, batches, resumption, lag, cancel, shutdown.
//! - `connections`: the handshake, bad datagrams, connection limits, peers
//!   that stop reading.

mod calls;
mod connections;
mod server;
mod subscriptions;
