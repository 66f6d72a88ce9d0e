//! Typed calls: one method per protocol call, and how the items of a
//! streaming call fold into its result (`Collect`, shared by both clients).

use vm_catalog_protocol::{
    Change, ChangePage, Cursor, GetInfo, GetVm, Info, ListEnd, ListSources, ListVms, Ping, Rescan,
    RescanOutcome, SourceLabel, SourceList, Streaming, Subscribe, VmDetail, VmEntry, VmName,
    VmPage,
};

use crate::client::{CallStream, Client};
use crate::error::{Error, ProtocolError, Result};
use crate::session::Step;

/// The result of [`Client::list_vms`]: one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmList {
    /// The position of the snapshot every page came from.
    pub cursor: Cursor,
    /// The entries, sorted by name, then precedence.
    pub vms: Vec<VmEntry>,
}

/// The result of [`Client::rescan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RescanReport {
    /// The new generation's changes, in the order of its batch (on a dry
    /// run, the changes it would make).
    pub changes: Vec<Change>,
    /// Generations, counts, the apply outcome.
    pub outcome: RescanOutcome,
}

/// A streaming call whose items and end fold into one result: the one copy
/// of that logic, which both clients drive.
pub(crate) trait Collect: Streaming {
    /// What the whole stream folds into ([`VmList`], [`RescanReport`]).
    type Output;
    /// What the items fold into.
    type Acc: Default;
    /// Folds one item in.
    fn push(acc: &mut Self::Acc, item: Self::Item);
    /// The result, once the end arrived.
    fn finish(acc: Self::Acc, end: Self::End) -> Result<Self::Output>;
}

impl Collect for ListVms {
    type Output = VmList;
    type Acc = Vec<VmEntry>;

    fn push(acc: &mut Vec<VmEntry>, page: VmPage) {
        if acc.is_empty() {
            // The first page is the list so far: no copy.
            *acc = page.vms;
        } else {
            acc.extend(page.vms);
        }
    }

    fn finish(vms: Vec<VmEntry>, end: ListEnd) -> Result<VmList> {
        if end.total as usize != vms.len() {
            return Err(Error::Protocol(ProtocolError::ListTotal {
                announced: end.total,
                received: vms.len(),
            }));
        }
        Ok(VmList {
            cursor: end.cursor,
            vms,
        })
    }
}

impl Collect for Rescan {
    type Output = RescanReport;
    type Acc = Vec<Change>;

    fn push(acc: &mut Vec<Change>, page: ChangePage) {
        acc.extend(page.changes);
    }

    fn finish(changes: Vec<Change>, outcome: RescanOutcome) -> Result<RescanReport> {
        Ok(RescanReport { changes, outcome })
    }
}

impl Client {
    /// Makes streaming call `C` and folds its items into its result.
    async fn collect<C: Collect>(&self, params: &C) -> Result<C::Output> {
        let mut stream = self.stream(params).await?;
        let mut acc = C::Acc::default();
        loop {
            match stream.step().await {
                Step::Item(item) => C::push(&mut acc, item?),
                Step::End(end) => return C::finish(acc, end),
                Step::Failed(e) => return Err(e),
            }
        }
    }

    /// Round trip with an arbitrary payload; returns the echoed payload.
    pub async fn ping(&self, payload: Vec<u8>) -> Result<Vec<u8>> {
        Ok(self.call(&Ping { payload }).await?.payload)
    }

    /// The daemon's status (`GetInfo`): its version, catalog position,
    /// sources, last rescan and apply.
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
        self.collect(&ListVms {
            include_inactive,
            source,
        })
        .await
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
        self.collect(&Rescan { dry_run }).await
    }

    /// Subscribes: a snapshot (or what was missed since `since`), then every
    /// change. For reconnection and resumption handled for you, see
    /// [`crate::Watch`].
    pub async fn subscribe(&self, since: Option<Cursor>) -> Result<CallStream<Subscribe>> {
        self.stream(&Subscribe { since }).await
    }
}

#[cfg(test)]
mod tests {
    use vm_catalog_protocol::Epoch;

    use super::*;

    fn end(total: u32) -> ListEnd {
        ListEnd {
            cursor: Cursor {
                epoch: Epoch(1),
                generation: 2,
            },
            total,
        }
    }

    #[test]
    fn a_list_must_hold_the_entries_its_end_announced() {
        let list = ListVms::finish(Vec::new(), end(0)).unwrap();
        assert_eq!(list.cursor, end(0).cursor);
        match ListVms::finish(Vec::new(), end(2)) {
            Err(Error::Protocol(e)) => {
                assert_eq!(
                    e,
                    ProtocolError::ListTotal {
                        announced: 2,
                        received: 0
                    }
                );
                assert_eq!(e.to_string(), "ListVms announced 2 entries and sent 0");
            }
            r => panic!("{r:?}"),
        }
    }
}
