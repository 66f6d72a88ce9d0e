//! `footprint`: the daemon's peak resident memory (`VmHWM` in
//! `/proc/PID/status`) idle, with 1,000 VMs, and with 1,000 subscribers on
//! top; and the sizes of the release binaries.
//!
//! Each run starts fresh daemons (catalog only): one with an empty catalog
//! that answers one `Ping`; one with 1,000 generated definitions that
//! answers one `ListVms` of them all, then takes 1,000 raw subscriptions
//! (each reads its snapshot up to `Synced`, then holds its connection) and
//! one rescan whose batch goes to all of them. Figures are the median
//! [min-max] over the runs; the per-VM and per-subscriber costs are
//! differences of medians.

use std::path::Path;

use vm_catalog_protocol::{Event, ListVms, Ping, Rescan, Subscribe};

use crate::daemon::{self, Daemon};
use crate::raw::RawClient;
use crate::stats::Runs;

/// Definitions in the big catalog.
const VMS: usize = 1_000;
/// Subscribers on top of it.
const SUBSCRIBERS: usize = 1_000;

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    let runs = if quick { 1 } else { 3 };
    let mut idle = (Runs::default(), Runs::default());
    let mut vms = (Runs::default(), Runs::default());
    let mut subs = (Runs::default(), Runs::default());
    for _ in 0..runs {
        let mut d = Daemon::new();
        let args = d.catalog_only(8);
        d.start(&args)?;
        call(&d.socket(), &Ping { payload: vec![1] })?;
        push(&mut idle, d.pid())?;
        drop(d);

        let mut d = Daemon::new();
        daemon::definitions(&d, VMS);
        let args = d.catalog_only(SUBSCRIBERS + 8);
        d.start(&args)?;
        call(&d.socket(), &ListVms::default())?;
        push(&mut vms, d.pid())?;
        let held = subscribe(&d.socket(), SUBSCRIBERS)?;
        daemon::toggle_provider(&d, &daemon::vm_name(1))?;
        call(&d.socket(), &Rescan { dry_run: false })?;
        push(&mut subs, d.pid())?;
        drop(held);
    }
    println!(
        "footprint: vm-catalogd (--apply none) resident memory from /proc/PID/status, KiB; \
         {runs} run(s), a fresh daemon each; median [min-max]"
    );
    println!(
        "  {:<62} {:>26} {:>26} {:>12}",
        "state", "peak RSS (VmHWM)", "RSS now (VmRSS)", "cost"
    );
    let per = |a: &Runs, b: &Runs, n: usize| (a.median() - b.median()) / n as f64;
    let rows = [
        (
            "idle: empty catalog, after one Ping".to_string(),
            &idle,
            String::new(),
        ),
        (
            format!("{VMS} VMs, after one ListVms of them all"),
            &vms,
            format!("{:.1} KiB/VM", per(&vms.0, &idle.0, VMS)),
        ),
        (
            format!("{VMS} VMs + {SUBSCRIBERS} subscribers, synced, one batch to all"),
            &subs,
            format!("{:.1} KiB/sub", per(&subs.0, &vms.0, SUBSCRIBERS)),
        ),
    ];
    for (label, (peak, now), cost) in rows {
        println!(
            "  {label:<62} {:>26} {:>26} {cost:>12}",
            peak.show(0),
            now.show(0)
        );
    }
    println!("  (cost: difference of the peak medians over the row above, per VM or subscriber)");
    for name in ["vm-catalogd", "vm-catalog"] {
        let bin = daemon::workspace_bin(name)?;
        let bytes = std::fs::read(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
        println!(
            "  binary {name}: {} bytes ({:.2} MiB), {}",
            bytes.len(),
            bytes.len() as f64 / (1024.0 * 1024.0),
            if has_symbols(&bytes) {
                "NOT stripped (a .symtab section)"
            } else {
                "stripped (no .symtab)"
            }
        );
    }
    Ok(())
}

fn push(into: &mut (Runs, Runs), pid: u32) -> Result<(), String> {
    let m = daemon::memory(pid)?;
    into.0.push(m.peak as f64);
    into.1.push(m.now as f64);
    Ok(())
}

/// One call in raw frames, read to its end.
fn call<C: vm_catalog_protocol::Call>(socket: &Path, params: &C) -> Result<(), String> {
    let mut c = RawClient::connect(socket).map_err(|e| e.to_string())?;
    let frame = c.request(params).map_err(|e| e.to_string())?;
    c.send(&frame).map_err(|e| e.to_string())?;
    c.finish_call(|_, _| {}).map_err(|e| e.to_string())
}

/// `n` raw subscriptions, each read up to its `Synced`.
fn subscribe(socket: &Path, n: usize) -> Result<Vec<RawClient>, String> {
    (0..n)
        .map(|_| {
            let mut c = RawClient::connect(socket).map_err(|e| e.to_string())?;
            let frame = c
                .request(&Subscribe::default())
                .map_err(|e| e.to_string())?;
            c.send(&frame).map_err(|e| e.to_string())?;
            loop {
                match c.next_event().map_err(|e| format!("subscriber: {e}"))? {
                    Event::Synced { .. } => return Ok(c),
                    _ => continue,
                }
            }
        })
        .collect()
}

/// Whether an ELF file still has a symbol table: its section name table
/// then holds `.symtab`.
fn has_symbols(elf: &[u8]) -> bool {
    elf.windows(8).any(|w| w == b".symtab\0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symbol_table_name_means_not_stripped() {
        assert!(has_symbols(b"\x7fELF...\0.symtab\0.strtab\0"));
        assert!(!has_symbols(b"\x7fELF...\0.shstrtab\0.text\0"));
    }
}
