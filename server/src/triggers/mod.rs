//! What asks for a rescan, besides `Rescan` calls and start-up: `SIGHUP`
//! ([`signal`]), changes in directory sources ([`inotify`]) and block device
//! hotplug ([`uevent`]). (Retries of failed rescans are the rescan worker's
//! own schedule, `rescan::retry`.)
//!
//! Triggers only send ([`crate::rescan::Rescans::trigger`]): the rescan
//! worker coalesces the requests and rescans everything, so a trigger never
//! says what changed, and nothing below calls back into a trigger. What the
//! inotify trigger watches comes from the rescans on a channel; the uevent
//! listener is bound by the daemon.

pub mod inotify;
pub mod signal;
pub mod uevent;
