//! Typed calls: one method per protocol call.

use vm_catalog_protocol::{
    Change, Cursor, GetInfo, GetVm, Info, ListSources, ListVms, Ping, Rescan, RescanOutcome,
    SourceLabel, SourceList, Subscribe, VmDetail, VmEntry, VmName,
};

use crate::client::{CallStream, Client};
use crate::error::{Error, Result};

/// The result of [`Client::list_vms`]: one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmList {
    /// The snapshot's position.
    pub cursor: Cursor,
    /// The entries, sorted by name, then precedence.
    pub vms: Vec<VmEntry>,
}

/// The result of [`Client::rescan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescanReport {
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// Generations, counts, the apply outcome.
    pub outcome: RescanOutcome,
}

/// Checks that a `ListVms` stream delivered the entries its end announced.
pub(crate) fn check_list(end: &vm_catalog_protocol::ListEnd, received: usize) -> Result<()> {
    if end.total as usize != received {
        return Err(Error::Protocol(format!(
            "ListVms announced {} entries and sent {received}",
            end.total
        )));
    }
    Ok(())
}

impl Client {
    /// Round trip with an arbitrary payload; returns the echoed payload.
    pub async fn ping(&self, payload: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.call(&Ping { payload }).await?.payload)
    }

    /// The daemon's state.
    pub async fn info(&self) -> Result<Info> {
        self.call(&GetInfo {}).await
    }

    /// The catalog: active VMs, or every definition with `include_inactive`,
    /// optionally from one source.
    pub async fn list_vms(
        &self,
        include_inactive: bool,
        source: Option<SourceLabel>,
    ) -> Result<VmList> {
        let mut stream = self
            .stream(&ListVms {
                include_inactive,
                source,
            })
            .await?;
        let mut vms = Vec::new();
        while let Some(page) = stream.next().await {
            vms.extend(page?.vms);
        }
        let end = stream
            .into_end()
            .ok_or_else(|| Error::Protocol("ListVms ended without ListEnd".into()))?;
        if end.total as usize != vms.len() {
            return Err(Error::Protocol(format!(
                "ListVms announced {} entries and sent {}",
                end.total,
                vms.len()
            )));
        }
        Ok(VmList {
            cursor: end.cursor,
            vms,
        })
    }

    /// One VM and every other definition of its name; `NotFound` if no
    /// source defines it.
    pub async fn get_vm(&self, name: &VmName) -> Result<VmDetail> {
        self.call(&GetVm { name: name.clone() }).await
    }

    /// Every source, in precedence order.
    pub async fn sources(&self) -> Result<SourceList> {
        self.call(&ListSources {}).await
    }

    /// Rescans now (root or the admin group only) and returns the changes;
    /// with `dry_run`, computes them without applying anything.
    pub async fn rescan(&self, dry_run: bool) -> Result<RescanReport> {
        let mut stream = self.stream(&Rescan { dry_run }).await?;
        let mut changes = Vec::new();
        while let Some(page) = stream.next().await {
            changes.extend(page?.changes);
        }
        let outcome = stream
            .into_end()
            .ok_or_else(|| Error::Protocol("Rescan ended without an outcome".into()))?;
        Ok(RescanReport { changes, outcome })
    }

    /// Subscribes: a snapshot (or what was missed since `since`), then every
    /// change. For reconnection and resumption handled for you, see
    /// [`crate::Watch`].
    pub async fn subscribe(&self, since: Option<Cursor>) -> Result<CallStream<Subscribe>> {
        self.stream(&Subscribe { since }).await
    }
}
