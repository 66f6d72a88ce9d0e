//! The machine the figures come from, printed before the tables: CPUs, CPU
//! model, kernel, the file systems of the temp dirs, the load at the start.

use std::path::Path;

/// One line describing this machine.
pub(crate) fn describe() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let uname = rustix::system::uname();
    let kernel = uname.release().to_string_lossy();
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_default();
    let tmp = std::env::temp_dir();
    let build = if cfg!(debug_assertions) {
        "DEBUG build"
    } else {
        "release build"
    };
    format!(
        "machine: {cpus} CPUs ({model}), Linux {kernel}, {} on {}, /dev/shm on {}, \
         load average {load} at start; {build}",
        tmp.display(),
        crate::rescan::fs_name(&tmp),
        crate::rescan::fs_name(Path::new("/dev/shm")),
    )
}
