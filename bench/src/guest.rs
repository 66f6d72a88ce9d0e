//! `guest`: a real UI VM under QEMU (TCG), against a host subscriber in
//! the same run.
//!
//! A `vm-catalogd` (catalog only, inotify on, `--debounce-ms 10`) with a
//! built-in UI VM: Debian's kernel and a `contrib/guest/make-initramfs`
//! image holding this build's `vm-catalog`, booted by `contrib/vmm/qemu/
//! qemu-vm` (its vsock through `vhost-device-vsock`'s Unix-socket backend,
//! to the daemon's listener; its shell on a Unix socket). Each run boots a
//! fresh VM and measures:
//!
//! - **boot to the first event**: from starting the VMM to the guest
//!   service's log holding its first line (the guest is asked over its
//!   shell, which waits inside the guest);
//! - **change to event**: a VM definition renamed into (then out of) the
//!   `user` source; the time until `vm-catalog watch --json` in the guest
//!   prints it (its lines read from the guest's serial port as they come)
//!   and until the same command on the host prints it, both running at
//!   once; and the guest's lag behind the host, per change;
//! - **the host's cost** of each subscription over the changes: the CPU
//!   time and resident memory of the host `vm-catalog watch` process
//!   against those of the UI VM's relay, `vhost-device-vsock` (the guest's
//!   client runs in the guest; the daemon serves both alike).
//!
//! Figures are the median [min-max] of the runs' medians. Needs
//! `qemu-system-x86_64`, a static busybox, and the caches `.ci/run` fills
//! (`VM_CATALOG_GUEST_CACHE`: the kernel, `vhost-device-vsock`).

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
const CHANGES: usize = 10;
/// The daemon's debounce.
const DEBOUNCE_MS: &str = "10";

pub(crate) fn run(quick: bool) -> Result<(), String> {
    let runs = if quick { 2 } else { 5 };
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
    let vhost = cache.join("vhost-device-vsock/bin/vhost-device-vsock");
    if !vhost.exists() {
        return Err(format!(
            "no vhost-device-vsock: contrib/vmm/qemu/build-vhost-device-vsock {}/vhost-device-vsock",
            cache.display()
        ));
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
    for i in 0..CHANGES {
        tree.vm("staging", &format!("vm{i:02}"));
    }

    println!(
        "guest: a real UI VM (QEMU, TCG) against a host subscriber; --debounce-ms {DEBOUNCE_MS}; {runs} runs, {CHANGES} changes each"
    );
    let (mut boot, mut host, mut guest, mut lag) = (
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
    );
    let (mut host_cpu, mut relay_cpu, mut host_rss, mut relay_rss) = (
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
    );
    let (mut qemu_cpu, mut window, mut relay_idle, mut qemu_idle) = (
        Runs::default(),
        Runs::default(),
        Runs::default(),
        Runs::default(),
    );
    for r in 0..runs {
        let m = one_run(&tree, &client, &vhost)?;
        println!(
            "  run {}: boot {:.1} s, host {:.1} ms, guest {:.1} ms, lag {:.1} ms",
            r + 1,
            m.boot,
            m.host,
            m.guest,
            m.lag
        );
        boot.push(m.boot);
        host.push(m.host);
        guest.push(m.guest);
        lag.push(m.lag);
        host_cpu.push(m.host_cpu_ms);
        relay_cpu.push(m.relay_cpu_ms);
        qemu_cpu.push(m.qemu_cpu_ms);
        window.push(m.window);
        relay_idle.push(m.relay_idle_ms);
        qemu_idle.push(m.qemu_idle_ms);
        host_rss.push(m.host_rss as f64 / 1024.0);
        relay_rss.push(m.relay_rss as f64 / 1024.0);
    }
    println!("| figure | median [min-max] |");
    println!("|---|---|");
    println!("| boot to the guest's first event | {} s |", boot.show(1));
    println!("| change to event, host subscriber | {} ms |", host.show(1));
    println!("| change to event, UI VM's guest | {} ms |", guest.show(1));
    println!(
        "| guest's lag behind the host, per change | {} ms |",
        lag.show(1)
    );
    println!(
        "| host CPU over {CHANGES} changes: host subscriber / UI VM relay | {} / {} ms |",
        host_cpu.show(0),
        relay_cpu.show(0)
    );
    println!(
        "| host CPU over the same changes ({} s): QEMU (TCG: the guest's work too) | {} ms |",
        window.show(2),
        qemu_cpu.show(0)
    );
    println!(
        "| host CPU over an idle second: UI VM relay / QEMU | {} / {} ms |",
        relay_idle.show(1),
        qemu_idle.show(0)
    );
    println!(
        "| host RSS: host subscriber / UI VM relay | {} / {} MiB |",
        host_rss.show(1),
        relay_rss.show(1)
    );
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
    /// QEMU's CPU over the changes: under TCG, the guest's own work too.
    qemu_cpu_ms: f64,
    /// How long the changes took, in seconds.
    window: f64,
    /// The relay's and QEMU's CPU over an idle second.
    relay_idle_ms: f64,
    qemu_idle_ms: f64,
    host_rss: u64,
    relay_rss: u64,
}

fn one_run(tree: &Tree, client: &Path, vhost: &Path) -> Result<Measured, String> {
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
            .env("VHOST_DEVICE_VSOCK", vhost)
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

    // The guest's own watch in the shell's foreground: its lines come back
    // on the serial port as it prints them.
    shell(&mut to_guest, "vm-catalog --vsock 2:22083 watch --json")?;
    expect(&guest_lines, |l| {
        l.contains("\"added\"") && l.contains("\"ui\"")
    })?;
    expect(&host_lines, |l| {
        l.contains("\"added\"") && l.contains("\"ui\"")
    })?;
    let relay =
        below(vmm.0.id(), "vhost-device-vs").ok_or("no vhost-device-vsock below the VMM")?;
    let qemu = below(vmm.0.id(), "qemu-system-x86").ok_or("no QEMU below the VMM")?;
    // An idle second first: what the relay and QEMU cost with no change.
    let (relay_idle0, qemu_idle0) = (cpu_ms(relay)?, cpu_ms(qemu)?);
    std::thread::sleep(Duration::from_secs(1));
    let relay_idle_ms = cpu_ms(relay)? - relay_idle0;
    let qemu_idle_ms = cpu_ms(qemu)? - qemu_idle0;
    let (host_cpu0, relay_cpu0, qemu_cpu0) = (cpu_ms(watch.0.id())?, cpu_ms(relay)?, cpu_ms(qemu)?);
    let changes_started = Instant::now();

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
    let relay_cpu_ms = cpu_ms(relay)? - relay_cpu0;
    let qemu_cpu_ms = cpu_ms(qemu)? - qemu_cpu0;
    let window = changes_started.elapsed().as_secs_f64();
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
        window,
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
