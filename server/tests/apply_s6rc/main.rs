//! The s6-rc applier against real s6-rc 0.5.4.1 and a real s6-svscan.
//!
//! Every test starts its own `s6-svscan` on a temporary scan directory
//! (stopped with all its supervisors and services when the test ends) and
//! checks the result with `s6-rc-db -l LIVE` and `s6-svstat`. Where s6-rc is
//! not installed (no `S6RC_BINDIR`, no `s6-rc-compile` on `PATH`) each test
//! prints `SKIP <test>: s6-rc not installed` and returns (under `CI=true` it
//! fails instead); the same decisions are unit-tested on a fake s6-rc in `server/src/apply/s6rc/tests.rs`.

mod adopt;
mod faults;
mod host;
mod lifecycle;
mod restart;
