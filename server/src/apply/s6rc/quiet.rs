//! Waiting until nobody else works on the live directory.
//!
//! The live directory is *quiet* when no s6-rc program names it (or writes
//! into the state directory) and its lock is free; the applier then takes
//! the lock itself. It waits for that, bounded and logged, before it adopts
//! or cleans anything at start-up: a daemon killed during `s6-rc-update`
//! leaves the update running, and that update may still switch to the
//! database it was given (issue 12). Waiting longer than the bound is a
//! [`Busy`] outcome, never a deletion.

use std::path::Path;
use std::time::{Duration, Instant};

use super::live::{Live, LiveLock, Lock};
use super::outcome::Busy;
use super::tools::S6rc;

/// How often the process table and the lock are looked at while waiting.
const POLL: Duration = Duration::from_millis(50);

/// Waits up to `bound` for the live directory to be quiet; then returns the
/// live lock (`None` when there is no live directory to lock). `before` says
/// what waits, for the log: "adopting it", "applying".
pub fn wait<T: S6rc>(
    tools: &mut T,
    live: &Live,
    state: &Path,
    bound: Duration,
    before: &str,
) -> Result<Option<LiveLock>, Busy> {
    let start = Instant::now();
    let mut logged = false;
    loop {
        let programs = tools.programs_on(live.path(), state);
        let lock = match programs.is_empty() {
            true => live.try_lock(),
            false => Lock::Held,
        };
        match lock {
            Lock::Taken(l) => {
                if logged {
                    tracing::info!(
                        live = %live.path().display(),
                        waited_ms = start.elapsed().as_millis(),
                        "nobody works on the live directory any more"
                    );
                }
                return Ok(Some(l));
            }
            Lock::NoLiveDir if programs.is_empty() => return Ok(None),
            Lock::NoLiveDir | Lock::Held => {}
        }
        let waited = start.elapsed();
        if waited >= bound {
            let busy = Busy {
                live: live.path().to_owned(),
                waited,
                programs,
                lock_holder: live.lock_holder(),
            };
            tracing::warn!("{busy}: going on without touching what they may use");
            return Err(busy);
        }
        if !logged {
            logged = true;
            let list: Vec<String> = programs
                .iter()
                .map(|h| format!("pid {} ({})", h.pid, h.command))
                .collect();
            tracing::warn!(
                live = %live.path().display(),
                programs = %list.join(", "),
                lock_holder = ?live.lock_holder(),
                "s6-rc programs work on the live directory, or its lock is held (an update left \
                 by a killed daemon, someone's s6-rc): waiting up to {} s before {before}",
                bound.as_secs()
            );
        }
        std::thread::sleep(POLL.min(bound - waited));
    }
}
