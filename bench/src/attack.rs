//! `attack`: the daemon's memory while local users ask for replies they
//! never read (issue 12, item 3), against its idle memory in the same run.
//!
//! The catalog is large: generated definitions with unknown entries (each
//! a warning), so that `vm-catalog list --all --json` is about 10 MB. Eight
//! other uids (connections made as them by a thread with its own
//! credentials: see `vm_catalog_tests::peers`) each open 32 connections and
//! send 32 `ListVms { include_inactive }` on each (asking for the largest
//! frames, 128 KiB), and never read. The row
//! gives the daemon's resident memory idle (after one `list --all`), its
//! peak during the attack, and after the attackers left; how many of their
//! connections were admitted; and whether root's `list` was served during
//! the attack. Needs root (to connect as other uids).

use std::path::Path;
use std::time::{Duration, Instant};

use vm_catalog_protocol::{LIMIT_MAX_FRAME, ListVms};
use vm_catalog_tests::peers::{Creds, connect_as};

use crate::daemon::{self, Daemon};
use crate::raw::{RawClient, Seqpacket};
use crate::stats::Runs;

/// Attacking uids.
const UIDS: u32 = 8;
/// Connections each attacker tries.
const CONNECTIONS: usize = 32;
/// Unread `ListVms` per connection.
const CALLS: usize = 32;
/// Generated definitions and unknown entries in each.
const DEFINITIONS: usize = 3_300;
const UNKNOWN: usize = 20;
/// How long the attack is held before the attackers leave: less than the
/// daemon's send deadline (10 s), after which it cuts stalled peers off.
const HOLD: Duration = Duration::from_secs(8);
/// How long after they left the memory is read again.
const AFTER: Duration = Duration::from_secs(12);

/// Runs the suite and prints its table.
pub(crate) fn run(quick: bool) -> Result<(), String> {
    if !vm_catalog_tests::is_root() {
        println!("attack: SKIP: connecting as other uids needs root");
        return Ok(());
    }
    let runs = if quick { 1 } else { 3 };
    let mut d = Daemon::new();
    for i in 0..DEFINITIONS {
        let vm = d.tree().vm("user", &format!("vm{i:05}"));
        for u in 0..UNKNOWN {
            std::fs::write(vm.join(format!("unknown-entry-number-{u:02}")), b"")
                .map_err(|e| e.to_string())?;
        }
    }
    let mut rows = Rows {
        root_served: true,
        ..Rows::default()
    };
    let mut json = 0;
    for _ in 0..runs {
        let args = vec![
            "--apply".into(),
            "none".into(),
            "--state-dir".into(),
            d.tree().join("state").into(),
            "--vm-dir".into(),
            d.tree().join("vm").into(),
        ];
        d.start(&args)?;
        json = list_json(&d.socket())?;
        let idle = daemon::memory(d.pid())?;
        let attack = attack(&d)?;
        let peak = daemon::memory(d.pid())?;
        drop(attack.clients);
        std::thread::sleep(AFTER);
        let after = daemon::memory(d.pid())?;
        rows.idle.push(idle.now as f64);
        rows.peak.push(peak.peak as f64);
        rows.after.push(after.now as f64);
        rows.ratio.push(peak.peak as f64 / idle.now as f64);
        rows.admitted.push(attack.admitted as f64);
        rows.root_served &= attack.root_served;
        d.stop();
    }
    println!(
        "attack: {UIDS} uids x {CONNECTIONS} connections x {CALLS} unread ListVms {{ all }}, \
         catalog of {DEFINITIONS} definitions (`list --all --json`: {:.1} MB); \
         vm-catalogd resident memory, KiB; {runs} run(s), median [min-max]",
        json as f64 / 1e6
    );
    println!("  {:<44} {:>30}", "figure", "value");
    for (label, r, decimals) in [
        ("idle RSS (after one list --all)", &rows.idle, 0),
        ("peak RSS under the attack (VmHWM)", &rows.peak, 0),
        ("peak / idle", &rows.ratio, 2),
        ("RSS 12 s after the attackers left", &rows.after, 0),
        ("attacking connections admitted", &rows.admitted, 0),
    ] {
        println!("  {label:<44} {:>30}", r.show(decimals));
    }
    println!(
        "  {:<44} {:>30}",
        "root's list --all served during the attack",
        if rows.root_served { "yes" } else { "NO" }
    );
    Ok(())
}

#[derive(Default)]
struct Rows {
    idle: Runs,
    peak: Runs,
    after: Runs,
    ratio: Runs,
    admitted: Runs,
    root_served: bool,
}

/// The attackers' connections (held until dropped), and what was seen.
struct Attack {
    clients: Vec<RawClient>,
    admitted: usize,
    root_served: bool,
}

fn attack(d: &Daemon) -> Result<Attack, String> {
    let socket = d.socket();
    let mut clients = Vec::new();
    for uid in 0..UIDS {
        let creds = Creds::user(60_000 + uid);
        for _ in 0..CONNECTIONS {
            let fd = connect_as(&socket, &creds).map_err(|e| format!("connect: {e}"))?;
            // The largest frames a peer may ask for; a refused connection
            // gets `Busy` instead of `Welcome`.
            let Ok(mut c) = RawClient::handshake(Seqpacket::from(fd), LIMIT_MAX_FRAME) else {
                continue;
            };
            for _ in 0..CALLS {
                let f = c
                    .request(&ListVms {
                        include_inactive: true,
                        source: None,
                    })
                    .map_err(|e| e.to_string())?;
                c.send(&f).map_err(|e| format!("send: {e}"))?;
            }
            clients.push(c);
        }
    }
    let admitted = clients.len();
    let start = Instant::now();
    let root_served = list_json(&socket).is_ok();
    if let Some(rest) = HOLD.checked_sub(start.elapsed()) {
        std::thread::sleep(rest);
    }
    Ok(Attack {
        clients,
        admitted,
        root_served,
    })
}

/// `vm-catalog list --all --json`: the size of its output.
fn list_json(socket: &Path) -> Result<usize, String> {
    let out = std::process::Command::new(daemon::workspace_bin("vm-catalog")?)
        .arg("--socket")
        .arg(socket)
        .args(["list", "--all", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "vm-catalog list: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout.len())
}
