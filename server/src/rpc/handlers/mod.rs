//! One handler per method. Each reads the published snapshot (never waiting
//! for a rescan) and sends its answer on the connection.

pub mod cancel;
pub mod get_vm;
pub mod info;
pub mod list_sources;
pub mod list_vms;
pub mod ping;
pub mod rescan;
pub mod subscribe;
