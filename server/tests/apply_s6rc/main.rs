//! The s6-rc applier's scenarios. Each one is written once and runs twice:
//! on a fake s6-rc (`…::fake::NAME`: the applier's decisions, anywhere) and
//! on s6-rc 0.5.4.1 with a real s6-svscan (`…::real::NAME`: what s6-rc
//! really does). A few need the real tools only (`real.rs`, and `crash.rs`:
//! the daemon killed during an update, a hung s6-rc call, supervisors left
//! in deleted live directories).
//!
//! Real tests start their own `s6-svscan` on a temporary scan directory
//! (stopped with all its supervisors and services when the test ends).
//! Where s6-rc is not installed (no `S6RC_BINDIR`, no `s6-rc-compile` on
//! `PATH`) each real test prints `SKIP <test>: s6-rc not installed` and
//! returns; under `CI=true` it fails instead.

/// Runs each scenario `fn NAME(rig: &impl Rig)` of the module on both rigs,
/// as `fake::NAME` and `real::NAME` (`vm_catalog_tests::both_rigs`).
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        vm_catalog_tests::both_rigs!($($name),*);
    };
}

mod adopt;
mod crash;
mod failures;
mod fake;
mod lifecycle;
mod real;
mod restart;
mod rig;
mod tidy;
mod waiting;
