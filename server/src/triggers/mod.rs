//! What asks for a rescan, besides `Rescan` calls and start-up: `SIGHUP`
//! ([`signal`]), changes in directory sources ([`inotify`]), block device
//! hotplug ([`uevent`]), and failed applies retried later ([`retry`]).
//!
//! Every trigger only asks ([`crate::rescan::Rescans::trigger`]); the rescan
//! worker coalesces the requests and rescans everything, so a trigger never
//! says what changed.

pub mod inotify;
pub mod retry;
pub mod signal;
pub mod uevent;
