//! A blocking client for programs without an async runtime: each call runs
//! on a private current-thread runtime.

use std::path::Path;

use tokio::runtime::{Builder, Runtime};
use vm_catalog_protocol::{Cursor, Info, SourceLabel, SourceList, VmDetail, VmName};

use crate::calls::{RescanReport, VmList};
use crate::client::{Client, ConnectOptions};
use crate::error::{Error, Result};
use crate::watch::{Mirror, Watch, WatchEvent};

fn runtime() -> Result<Runtime> {
    Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Disconnected(Some(e)))
}

/// A blocking connection to `vm-catalogd`.
///
/// ```no_run
/// let client = vm_catalog::BlockingClient::connect("/run/vm-catalog/socket")?;
/// for vm in client.list_vms(false, None)?.vms {
///     println!("{}", vm.name);
/// }
/// # Ok::<(), vm_catalog::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockingClient {
    client: Client,
    rt: Runtime,
}

impl BlockingClient {
    /// Connects with default options.
    pub fn connect(path: impl AsRef<Path>) -> Result<Self> {
        Self::connect_with(path, &ConnectOptions::default())
    }

    /// Connects.
    pub fn connect_with(path: impl AsRef<Path>, opts: &ConnectOptions) -> Result<Self> {
        let rt = runtime()?;
        let client = rt.block_on(Client::connect_with(path, opts))?;
        Ok(BlockingClient { client, rt })
    }

    /// See [`Client::ping`].
    pub fn ping(&self, payload: Vec<u8>) -> Result<Vec<u8>> {
        self.rt.block_on(self.client.ping(payload))
    }

    /// See [`Client::info`].
    pub fn info(&self) -> Result<Info> {
        self.rt.block_on(self.client.info())
    }

    /// See [`Client::list_vms`].
    pub fn list_vms(&self, include_inactive: bool, source: Option<SourceLabel>) -> Result<VmList> {
        self.rt
            .block_on(self.client.list_vms(include_inactive, source))
    }

    /// See [`Client::get_vm`].
    pub fn get_vm(&self, name: &VmName) -> Result<VmDetail> {
        self.rt.block_on(self.client.get_vm(name))
    }

    /// See [`Client::sources`].
    pub fn sources(&self) -> Result<SourceList> {
        self.rt.block_on(self.client.sources())
    }

    /// See [`Client::rescan`].
    pub fn rescan(&self, dry_run: bool) -> Result<RescanReport> {
        self.rt.block_on(self.client.rescan(dry_run))
    }
}

/// A blocking [`Watch`].
#[derive(Debug)]
pub struct BlockingWatch {
    watch: Watch,
    rt: Runtime,
}

impl BlockingWatch {
    /// A watch of the daemon at `path`, resuming from `since` if given.
    pub fn new(path: impl Into<std::path::PathBuf>, since: Option<Cursor>) -> Result<Self> {
        Ok(BlockingWatch {
            watch: Watch::since(path, since),
            rt: runtime()?,
        })
    }

    /// See [`Watch::mirror`].
    pub fn mirror(&self) -> &Mirror {
        self.watch.mirror()
    }
}

/// Never ends: every item is the next [`WatchEvent`] (see [`Watch::next`]).
impl Iterator for BlockingWatch {
    type Item = Result<WatchEvent>;

    fn next(&mut self) -> Option<Result<WatchEvent>> {
        Some(self.rt.block_on(self.watch.next()))
    }
}
