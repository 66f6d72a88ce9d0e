//! The real `vm-catalogd` binary, end to end over its socket: queries,
//! rescans, watches, subscriptions across restarts, slow and hostile
//! clients, permissions, signals. One module per topic; the helpers are
//! here.

mod changed;
mod claimant;
mod lifecycle;
mod nosymfollow;
mod queries;
mod recovery;
mod rescans;
mod spec;
mod spectrum;
mod subscriptions;
mod ui_vm;
mod watches;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_seqpacket::UnixSeqpacket;
use vm_catalog::{Client, Error, Watch, WatchEvent};
use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::*;
use vm_catalog_tests::daemon::{TestDaemon, workspace_bin};
use vm_catalog_tests::wire::{connect, recv_error as read_error};

fn daemon() -> TestDaemon {
    TestDaemon::new(env!("CARGO_BIN_EXE_vm-catalogd"))
}

/// Waits for the next watch event, at most 60 s (a guard against a hang).
async fn next(w: &mut Watch) -> WatchEvent {
    tokio::time::timeout(Duration::from_secs(60), w.next())
        .await
        .expect("a watch event in time")
        .expect("no fatal watch error")
}

/// Waits until `cond` holds, at most 60 s (a guard against a hang).
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, mut cond: F) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What each change is about (a VM's name or a source's label) and its kind.
fn kinds(changes: &[Change]) -> Vec<(String, ChangeKind)> {
    changes
        .iter()
        .map(|c| match &c.item {
            ChangeItem::Vm(e) => (e.name.to_string(), c.kind),
            ChangeItem::Source(s) => (s.label.to_string(), c.kind),
        })
        .collect()
}

fn names(list: &vm_catalog::VmList) -> Vec<String> {
    list.vms
        .iter()
        .map(|e| format!("{}@{}:{}", e.name, e.source, e.state.as_str()))
        .collect()
}

/// A raw connection after the handshake.
async fn raw(path: &std::path::Path) -> UnixSeqpacket {
    connect(path).await.0
}
