//! `vm-catalogd`: one catalog of the host's VMs.
//!
//! Data flows one way (see `ARCHITECTURE.md`): triggers → rescan
//! coordinator → discover sources → scan definitions → merge into a catalog →
//! apply → publish → RPC readers.

pub mod apply;
pub mod catalog;
pub mod check;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod definition;
pub mod hub;
pub mod logging;
pub mod pipeline;
pub mod rescan;
pub mod rpc;
pub mod source;
pub mod views;
pub mod watch;
