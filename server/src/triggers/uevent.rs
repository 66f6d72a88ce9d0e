//! Block device hotplug: every uevent hint asks for a rescan, whose first
//! step is a partition reconcile. The listener itself (netlink, sender
//! checks) is [`crate::source::partition::uevent`]; it is bound before the
//! first rescan, so nothing in between is missed.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::RescanTrigger;

use crate::rescan::Rescans;
use crate::source::partition::UeventListener;

/// How long to wait after the listener failed before reading it again.
const AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Turns the hints of `listener` into rescans until `shutdown`. A failure
/// of the listener may have lost events: it asks for a rescan too.
pub async fn run(mut listener: UeventListener, rescans: Rescans, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            hint = listener.next() => match hint {
                Ok(h) => {
                    tracing::debug!(events = h.events, lost = h.lost, "block device uevents");
                    rescans.trigger(RescanTrigger::Hotplug);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "uevent listener failed; rescanning");
                    rescans.trigger(RescanTrigger::Hotplug);
                    tokio::time::sleep(AFTER_FAILURE).await;
                }
            },
        }
    }
}
