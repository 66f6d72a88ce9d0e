//! One handler per method. Each reads the published snapshot (never waiting
//! for a rescan) and sends its answer on the connection.

pub(super) mod cancel;
pub(super) mod get_vm;
pub(super) mod info;
pub(super) mod list_sources;
pub(super) mod list_vms;
pub(super) mod ping;
pub(super) mod rescan;
pub(super) mod subscribe;
