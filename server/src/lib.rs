//! `vm-catalogd`: one catalog of the host's VMs.
//!
//! Data flows one way (see `ARCHITECTURE.md`), and the modules below come in
//! its order: triggers → rescan worker → sources → definitions → catalog →
//! views → hooks → apply → publish → RPC readers.

pub mod logging;

// The configuration stage (low-level arguments, then the types each part
// takes) and the daemon's life.
pub mod cli;
pub mod config;
pub mod daemon;

// What asks for a rescan:
pub mod triggers;
// one rescan at a time (plan: discover → scan → merge; commit: views → apply → publish),
pub mod rescan;
// over the sources of definitions,
pub mod source;
// each definition scanned,
pub mod definition;
// merged into one catalog (pure),
pub mod catalog;
// the directories the VMMs read built on disk,
pub mod views;
// each new VM prepared (and each VM that left released) by the host's hook,
pub mod hooks;
// the VM services kept in step,
pub mod apply;
// and the result published
pub mod publish;
// to readers on the socket.
pub mod rpc;

// `vm-catalogd check`, the offline validator.
pub mod check;
