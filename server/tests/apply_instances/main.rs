//! The s6-instance applier's scenarios. Each one is written once and runs
//! twice: on a fake (`…::fake::NAME`: the applier's decisions, anywhere)
//! and on Debian's s6 2.11 with a real `s6-svscan` and a templated service
//! made by `s6-instance-maker` (`…::real::NAME`: what `s6-instance-*`
//! really do). `daemon.rs` runs the real `vm-catalogd` binary on the real
//! tools; `damage.rs` damages its state files between two runs.
//!
//! Where s6 is not installed each real test prints `SKIP <test>: …` and
//! returns; under `CI=true` it fails instead.

/// Runs each scenario `fn NAME(rig: &impl Rig)` of the module on both rigs,
/// as `fake::NAME` and `real::NAME` (`vm_catalog_tests::both_rigs`).
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        vm_catalog_tests::both_rigs!($($name),*);
    };
}

mod daemon;
mod damage;
mod failures;
mod fake;
mod lifecycle;
mod rig;
