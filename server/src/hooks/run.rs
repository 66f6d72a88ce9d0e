//! Running the hook program: `PROGRAM ACTION <id> <name>`, with the VM's
//! facts in its environment, stdin from `/dev/null`, no other descriptor of
//! the daemon's, in its own process
//! group, killed with that group at its deadline (see
//! [`crate::apply::process::run`]). The hooks of one stage run side by
//! side, at most [`PARALLEL`] at a time, so that a stage waits about one
//! deadline however many hooks hang.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Action, HookConfig, VmFacts};
use crate::apply::process::{self, ToolError};

/// The most hooks running at once.
pub const PARALLEL: usize = 16;

/// Runs the hook once for `vm`: `Ok` when it exits 0 in time.
pub fn run_one(config: &HookConfig, action: Action, vm: &VmFacts) -> Result<(), ToolError> {
    let mut cmd = Command::new(&config.program);
    cmd.arg(action.as_str())
        .arg(vm.id.as_str())
        .arg(vm.name.as_str())
        .current_dir("/");
    for (k, v) in vm.env() {
        cmd.env(k, v);
    }
    // SAFETY: the closure runs in the child between fork and exec and only
    // makes one system call, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            // Only stdin, stdout and stderr reach the hook: none of the
            // daemon's descriptors (its readiness fd, sockets, watches),
            // which a process the hook leaves behind would otherwise hold.
            // (Marked close-on-exec rather than closed, so that spawning
            // still reports an exec failure; an old kernel without
            // close_range keeps the old behaviour.)
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    process::run(action.label(), cmd, config.timeout).map(|out| {
        if !out.is_empty() {
            tracing::debug!(vm = %vm.name, action = action.as_str(), output = %String::from_utf8_lossy(&out).trim_end(), "hook output");
        }
    })
}

/// Runs the hook for every VM of `vms`, side by side; the results are in
/// the order of `vms`.
pub fn run_all(
    config: &HookConfig,
    action: Action,
    vms: &[&VmFacts],
) -> Vec<Result<(), ToolError>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<(), ToolError>>>> =
        Mutex::new((0..vms.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..vms.len().min(PARALLEL) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(vm) = vms.get(i) else { break };
                    let r = run_one(config, action, vm);
                    if let Ok(mut v) = results.lock() {
                        v[i] = Some(r);
                    }
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| {
                Err(ToolError::Spawn {
                    program: action.label(),
                    error: "the hook's runner thread failed".into(),
                })
            })
        })
        .collect()
}
