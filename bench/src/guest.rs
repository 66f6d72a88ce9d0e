//! `guest`: a real UI VM under QEMU (TCG), against a host subscriber in
//! the same run.
//!
//! A `vm-catalogd` (catalog only, inotify on, `--debounce-ms 10`) with a
//! built-in UI VM: Debian's kernel and a `contrib/guest/make-initramfs`
//! image holding this build's `vm-catalog`, booted by `contrib/vmm/qemu/
//! qemu-vm` (its vsock device served by the workspace's
//! `vm-catalog-vsock-relay`, and, in runs of their own alternating with
//! those, by `vhost-device-vsock`'s Unix-socket backend if it is built; its
//! shell on a Unix socket). Each run boots a fresh VM and measures:
//!
//! - **boot to the first event**: from starting the VMM to the guest
//!   service's log holding its first line (the guest is asked over its
//!   shell, which waits inside the guest);
//! - **change to event**: a VM definition renamed into (then out of) the
//!   `user` source; the time until `vm-catalog watch --json` in the guest
//!   prints it (its lines read from the guest's serial port as they come)
//!   and until the same command on the host prints it, both running at
//!   once; and the guest's lag behind the host, per change;
//! - **the host's cost** of one subscription over the changes: the CPU
//!   time (each thread's `schedstat`, in ns) and resident memory of the
//!   host `vm-catalog watch` process against those of the UI VM's vsock
//!   device (the guest's client runs in the guest; the daemon serves both
//!   alike). The guest service's own subscription is stopped first, so
//!   that the device carries one subscription, as the host process does.
//!
//! Figures are the median [min-max] of the runs. Needs
//! `qemu-system-x86_64`, a static busybox, the kernel in the cache `.ci/run`
//! fills (`VM_CATALOG_GUEST_CACHE`), and the release
//! `vm-catalog-vsock-relay`; `vhost-device-vsock` is compared with when
//! `contrib/vmm/qemu/build-vhost-device-vsock` has built it into the cache.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_catalog_tests::tree::Tree;

use crate::daemon::{Killed, workspace_bin};
use crate::stats::Runs;

/// `contrib/` of this checkout.
const CONTRIB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../contrib");
/// Anything a guest does under TCG takes at most this long.
const WAIT: Duration = Duration::from_secs(300);
/// Changes per run (half adds, half removes).
const CHANGES: usize = 50;
/// The daemon's debounce.
const DEBOUNCE_MS: &str = "10";

/// What serves the UI VM's vsock device.
struct Device {
    /// As `qemu-vm`'s `VMM_VSOCK_DEVICE` names it.
    name: &'static str,
    /// The binary, and the variable that gives it to `qemu-vm`.
    bin: PathBuf,
    var: &'static str,
}

impl Device {
    /// Its process name as `/proc/PID/comm` has it (15 bytes at most).
    fn comm(&self) -> String {
        let name = self.bin.file_name().unwrap_or_default().to_string_lossy();
        name.chars().take(15).collect()
    }
}

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let runs = if quick { 1 } else { 5 };
    let cache = std::env::var_os("VM_CATALOG_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                .join(".cache/vm-catalog-guest")
        });
    let (vmlinuz, modules) = kernel(&cache.join("kernels")).ok_or_else(|| {
        format!(
            "no guest kernel: contrib/guest/fetch-kernel {}/kernels",
            cache.display()
        )
    })?;
    let mut devices = vec![Device {
        name: "relay",
        bin: workspace_bin("vm-catalog-vsock-relay")?,
        var: "VSOCK_RELAY",
    }];
    let vhost = cache.join("vhost-device-vsock/bin/vhost-device-vsock");
    if vhost.exists() {
        devices.push(Device {
            name: "vhost-device-vsock",
            bin: vhost,
            var: "VHOST_DEVICE_VSOCK",
        });
    } else {
        println!(
            "(no vhost-device-vsock to compare with: contrib/vmm/qemu/build-vhost-device-vsock {}/vhost-device-vsock)",
            cache.display()
        );
    }
    let client = workspace_bin("vm-catalog")?;
    let tree = Tree::new();
    let image = tree.join("ui.img");
    let out = Command::new("sh")
        .arg(format!("{CONTRIB}/guest/make-initramfs"))
        .arg("--modules")
        .arg(&modules)
        .arg("--client")
        .arg(&client)
        .arg(&image)
        .output()
        .map_err(|e| format!("make-initramfs: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "make-initramfs: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let ui = tree.dir("builtin/ui");
    fs::create_dir_all(ui.join("blk")).map_err(|e| e.to_string())?;
    fs::copy(&vmlinuz, ui.join("vmlinux")).map_err(|e| e.to_string())?;
    fs::copy(&image, ui.join("blk/initramfs.img")).map_err(|e| e.to_string())?;
    tree.dir("user");
    for i in 0..CHANGES / 2 {
        tree.vm("staging", &format!("vm{i:02}"));
    }

    println!(
        "guest: a real UI VM (QEMU, TCG) against a host subscriber; --debounce-ms {DEBOUNCE_MS}; \
         {runs} runs of each vsock device, alternating, {CHANGES} changes each"
    );
    let mut all: Vec<Vec<Measured>> = devices.iter().map(|_| Vec::new()).collect();
    for r in 0..runs {
        for (d, device) in devices.iter().enumerate() {
            let m = one_run(&tree, &client, device)?;
            println!(
                "  run {} {}: boot {:.1} s, host {:.1} ms, guest {:.1} ms, lag {:.1} ms; \
                 CPU host subscriber {:.2} ms, device {:.2} ms ({})",
                r + 1,
                device.name,
                m.boot,
                m.host,
                m.guest,
                m.lag,
                m.host_cpu_ms,
                m.relay_cpu_ms,
                m.threads
            );
            all[d].push(m);
        }
    }
    println!(
        "| figure | {} |",
        devices
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(devices.len()));
    let row = |what: &str, unit: &str, decimals: usize, f: &dyn Fn(&Measured) -> f64| {
        let cells: Vec<String> = all
            .iter()
            .map(|ms| {
                let mut r = Runs::default();
                for m in ms {
                    r.push(f(m));
                }
                format!("{}{unit}", r.show(decimals))
            })
            .collect();
        println!("| {what} | {} |", cells.join(" | "));
    };
    row("boot to the guest's first event", " s", 1, &|m| m.boot);
    row("change to event, host subscriber", " ms", 1, &|m| m.host);
    row("change to event, UI VM's guest", " ms", 1, &|m| m.guest);
    row("guest's lag behind the host, per change", " ms", 1, &|m| {
        m.lag
    });
    row(
        &format!("host CPU over {CHANGES} changes, host subscriber"),
        " ms",
        2,
        &|m| m.host_cpu_ms,
    );
    row(
        &format!("host CPU over {CHANGES} changes, the vsock device"),
        " ms",
        2,
        &|m| m.relay_cpu_ms,
    );
    row(
        "the vsock device's CPU / the host subscriber's, same run",
        "",
        2,
        &|m| m.relay_cpu_ms / m.host_cpu_ms,
    );
    row(
        "host CPU over the changes: QEMU (TCG: the guest's work too)",
        " ms",
        0,
        &|m| m.qemu_cpu_ms,
    );
    row(
        "host CPU over an idle second: the vsock device",
        " ms",
        2,
        &|m| m.relay_idle_ms,
    );
    row("host CPU over an idle second: QEMU", " ms", 0, &|m| {
        m.qemu_idle_ms
    });
    row("host RSS: host subscriber", " MiB", 1, &|m| {
        m.host_rss as f64 / 1024.0
    });
    row("host RSS: the vsock device", " MiB", 1, &|m| {
        m.relay_rss as f64 / 1024.0
    });
    Ok(())
}

/// One run's medians.
struct Measured {
    boot: f64,
    host: f64,
    guest: f64,
    lag: f64,
    host_cpu_ms: f64,
    relay_cpu_ms: f64,
    /// The vsock device's CPU over the changes by thread (`comm: ms`).
    threads: String,
    /// QEMU's CPU over the changes: under TCG, the guest's own work too.
    qemu_cpu_ms: f64,
    /// The vsock device's and QEMU's CPU over an idle second.
    relay_idle_ms: f64,
    qemu_idle_ms: f64,
    host_rss: u64,
    relay_rss: u64,
}

fn one_run(tree: &Tree, client: &Path, device: &Device) -> Result<Measured, String> {
    let run = tempfile::tempdir().map_err(|e| e.to_string())?;
    let socket = run.path().join("socket");
    let vm_dir = run.path().join("vm");
    let daemon = Killed(
        Command::new(workspace_bin("vm-catalogd")?)
            .arg("--socket")
            .arg(&socket)
            .arg("--builtin")
            .arg(tree.join("builtin"))
            .arg("--source")
            .arg(format!("user={}", tree.join("user").display()))
            .args(["--no-partitions", "--apply", "none", "--log-level", "warn"])
            .args(["--debounce-ms", DEBOUNCE_MS, "--ui-vm", "ui"])
            .arg("--state-dir")
            .arg(run.path().join("state"))
            .arg("--vm-dir")
            .arg(&vm_dir)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("vm-catalogd: {e}"))?,
    );
    let listener = vm_dir.join("ui/vsock_22083");
    wait_until("the daemon's UI VM listener", || listener.exists())?;

    // The host subscriber: `vm-catalog watch --json`, its lines timed.
    let mut watch = Command::new(client)
        .arg("--socket")
        .arg(&socket)
        .args(["watch", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("vm-catalog watch: {e}"))?;
    let host_lines = lines(watch.stdout.take().expect("piped"));
    let watch = Killed(watch);

    // The UI VM.
    let started = Instant::now();
    let vmm = Killed(
        Command::new("sh")
            .arg(format!("{CONTRIB}/vmm/qemu/qemu-vm"))
            .arg("ui")
            .env("VM_DIR", &vm_dir)
            .env("VMM_ACCEL", "tcg")
            .env("VMM_SHELL", "1")
            .env("VMM_VSOCK_DEVICE", device.name)
            .env(device.var, &device.bin)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("qemu-vm: {e}"))?,
    );
    let console = vm_dir.join("ui/console");
    wait_until("the guest's /init", || {
        fs::read_to_string(&console).is_ok_and(|c| c.contains("vm-catalog-guest: up"))
    })?;
    let stream = UnixStream::connect(vm_dir.join("ui/shell")).map_err(|e| e.to_string())?;
    let mut to_guest = stream.try_clone().map_err(|e| e.to_string())?;
    let guest_lines = lines(stream);
    let shell = |to: &mut UnixStream, cmd: &str| -> Result<(), String> {
        to.write_all(format!("{cmd}\n").as_bytes())
            .map_err(|e| e.to_string())
    };
    shell(
        &mut to_guest,
        "while [ ! -s /run/vm-catalog-watch/current ]; do sleep 0.02; done; echo first-event",
    )?;
    expect(&guest_lines, |l| l.trim() == "first-event")?;
    let boot = started.elapsed().as_secs_f64();

    // The guest service's own subscription ends: the device then carries
    // one subscription, the shell's, as the host runs one.
    shell(
        &mut to_guest,
        "s6-svc -d /run/service/vm-catalog-watch; \
         while ps | grep -q '[v]sock 22083 watch'; do sleep 0.05; done; echo service-down",
    )?;
    expect(&guest_lines, |l| l.trim() == "service-down")?;
    // The guest's own watch in the shell's foreground: its lines come back
    // on the serial port as it prints them.
    shell(&mut to_guest, "vm-catalog --vsock 2:22083 watch --json")?;
    expect(&guest_lines, |l| {
        l.contains("\"added\"") && l.contains("\"ui\"")
    })?;
    expect(&host_lines, |l| {
        l.contains("\"added\"") && l.contains("\"ui\"")
    })?;
    let relay = below(vmm.0.id(), &device.comm())
        .ok_or_else(|| format!("no {} below the VMM", device.comm()))?;
    let qemu = below(vmm.0.id(), "qemu-system-x86").ok_or("no QEMU below the VMM")?;
    // An idle second first: what the relay and QEMU cost with no change.
    let (relay_idle0, qemu_idle0) = (cpu_ms(relay)?, cpu_ms(qemu)?);
    std::thread::sleep(Duration::from_secs(1));
    let relay_idle_ms = cpu_ms(relay)? - relay_idle0;
    let qemu_idle_ms = cpu_ms(qemu)? - qemu_idle0;
    let (host_cpu0, relay_cpu0, qemu_cpu0) = (cpu_ms(watch.0.id())?, cpu_ms(relay)?, cpu_ms(qemu)?);
    let threads0 = thread_ns(relay)?;
    let strace = Strace::attach(relay)?;

    let (mut host, mut guest, mut lag) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..CHANGES {
        let name = format!("vm{:02}", i / 2);
        let (from, to, event) = if i % 2 == 0 {
            (
                tree.join("staging").join(&name),
                tree.join("user").join(&name),
                "added",
            )
        } else {
            (
                tree.join("user").join(&name),
                tree.join("staging").join(&name),
                "removed",
            )
        };
        let want =
            |l: &str| l.contains(&format!("\"{event}\"")) && l.contains(&format!("\"{name}\""));
        let t0 = Instant::now();
        fs::rename(&from, &to).map_err(|e| e.to_string())?;
        let h = expect(&host_lines, want)?;
        let g = expect(&guest_lines, want)?;
        host.push(ms(h - t0));
        guest.push(ms(g - t0));
        lag.push(ms(g.saturating_duration_since(h)) - ms(h.saturating_duration_since(g)));
    }
    let host_cpu_ms = cpu_ms(watch.0.id())? - host_cpu0;
    if let Some(strace) = strace {
        println!(
            "  {} under strace -c -f over the {CHANGES} changes (its CPU figures include strace's cost):\n{}",
            device.name,
            strace.finish()?
        );
    }
    let relay_cpu_ms = cpu_ms(relay)? - relay_cpu0;
    let threads = thread_ns(relay)?
        .into_iter()
        .map(|(tid, (comm, ns))| {
            let before = threads0.get(&tid).map_or(0, |t| t.1);
            format!("{comm} {:.2}", (ns - before) as f64 / 1e6)
        })
        .collect::<Vec<_>>()
        .join(", ");
    let qemu_cpu_ms = cpu_ms(qemu)? - qemu_cpu0;
    let host_rss = rss_kib(watch.0.id())?;
    let relay_rss = rss_kib(relay)?;
    // Back as it was for the next run.
    for i in 0..CHANGES / 2 {
        let name = format!("vm{i:02}");
        if tree.join("user").join(&name).exists() {
            let _ = fs::rename(
                tree.join("user").join(&name),
                tree.join("staging").join(&name),
            );
        }
    }
    drop(to_guest);
    drop(vmm);
    drop(watch);
    drop(daemon);
    Ok(Measured {
        boot,
        host: median(host),
        guest: median(guest),
        lag: median(lag),
        host_cpu_ms,
        relay_cpu_ms,
        qemu_cpu_ms,
        threads,
        relay_idle_ms,
        qemu_idle_ms,
        host_rss,
        relay_rss,
    })
}

/// The unpacked kernel under `kernels`: (its vmlinuz, its module tree).
fn kernel(kernels: &Path) -> Option<(PathBuf, PathBuf)> {
    vm_catalog_tests::kernel::unpacked(kernels)
}

/// A thread reading `r` line by line, each with the instant it arrived.
fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<(Instant, String)> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(r);
        loop {
            let mut l = String::new();
            match r.read_line(&mut l) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if tx.send((Instant::now(), l)).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The arrival of the first line (from now on) that `want` accepts.
fn expect(
    rx: &mpsc::Receiver<(Instant, String)>,
    want: impl Fn(&str) -> bool,
) -> Result<Instant, String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, l)) if want(&l) => return Ok(at),
            Ok(_) => {}
            Err(e) => return Err(format!("an expected line: {e}")),
        }
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("{what}: not within {WAIT:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The process named `comm` (as `/proc/PID/comm` has it: 15 bytes at
/// most) below the VMM script `pid`.
fn below(pid: u32, comm: &str) -> Option<u32> {
    vm_catalog_tests::s6::descendants_of(pid)
        .into_iter()
        .find(|p| fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == comm))
}

/// CPU time of `pid`, every thread of it, in ms (the sum of each task's
/// `schedstat`, in nanoseconds: `stat`'s ticks are too coarse here).
fn cpu_ms(pid: u32) -> Result<f64, String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("{pid}: {e}"))?;
    let mut ns = 0u64;
    for t in tasks.flatten() {
        let s = fs::read_to_string(t.path().join("schedstat")).unwrap_or_default();
        ns += s
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
    }
    Ok(ns as f64 / 1e6)
}

/// With `VM_CATALOG_BENCH_STRACE` set: `strace -c -f` attached to the
/// vsock device over the changes, for the system calls it makes per change.
struct Strace {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
}

impl Strace {
    fn attach(pid: u32) -> Result<Option<Strace>, String> {
        if std::env::var_os("VM_CATALOG_BENCH_STRACE").is_none() {
            return Ok(None);
        }
        let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
        let child = Command::new("strace")
            .args(["-c", "-f", "-q", "-p", &pid.to_string(), "-o"])
            .arg(out.path())
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("strace: {e}"))?;
        // strace says nothing once attached; give it the time to.
        std::thread::sleep(Duration::from_secs(1));
        Ok(Some(Strace { child, out }))
    }

    /// Detaches (SIGINT) and returns strace's table.
    fn finish(mut self) -> Result<String, String> {
        let pid = rustix::process::Pid::from_raw(self.child.id() as i32).ok_or("strace's pid")?;
        rustix::process::kill_process(pid, rustix::process::Signal::INT)
            .map_err(|e| format!("strace: {e}"))?;
        self.child.wait().map_err(|e| format!("strace: {e}"))?;
        fs::read_to_string(self.out.path()).map_err(|e| e.to_string())
    }
}

/// Each thread of `pid`: its name and CPU time in ns, by thread id.
fn thread_ns(pid: u32) -> Result<BTreeMap<u32, (String, u64)>, String> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| format!("{pid}: {e}"))?;
    let mut out = BTreeMap::new();
    for t in tasks.flatten() {
        let Some(tid) = t.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let ns = fs::read_to_string(t.path().join("schedstat"))
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        out.insert(tid, (comm.trim().to_owned(), ns));
    }
    Ok(out)
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, String> {
    crate::daemon::memory(pid).map(|m| m.now)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}
