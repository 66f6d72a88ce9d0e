//! The UI VMs' listeners, following the published catalog.
//!
//! A UI VM reaches the daemon through its VMM's hybrid vsock: the guest's
//! connection to the host (CID 2) on the port arrives as a Unix
//! `SOCK_STREAM` connection to `<the VM's vsock socket>_<port>`. For every
//! VM named by `--ui-vm` that is active in the published catalog, the
//! daemon listens there (the path from [`SocketTemplate`]); when the VM
//! leaves the catalog or stops being active, the listener is removed and
//! its connections end — their calls cancelled (a subscription sends its
//! `StreamEnd`), then a `Goodbye`.
//!
//! Each listener serves its connections as the VM ([`Peer::vm`]): the same
//! accept loop ([`accept::run`]) and connection code as the host socket, on
//! the stream transport, drawing only on that VM's own ledgers
//! ([`VmShare`]). What it follows is the
//! published snapshot ([`crate::publish::Hub::published`]), never the
//! rescan's internals.

use std::collections::BTreeMap;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::UnixListener;
use tokio_util::task::TaskTracker;
use vm_catalog_protocol::{DiagCode, RescanTrigger, VmId, VmName, VmState};

use super::accept::{self, Admission, Admit};
use super::admission::Tenant;
use super::ctx::{Ctx, VmShare};
use super::handshake::Draws;
use super::peer::Peer;
use super::session::Admitted;
use super::stop::Stop;
use crate::publish::Published;

mod owner;
mod socket;
mod template;

pub use owner::{Access, Owner, uid_of};
pub use socket::Parent;
pub use template::{SocketTemplate, TemplateError, UserTemplate};

/// What a UI VM's connections are told when its listener goes.
const LEFT_GOODBYE: &str = "the UI VM is no longer active in the catalog";

/// Which VMs get a listener, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UiVmConfig {
    /// The VMs, as the catalog names them (a qualified reference
    /// `<label>.<name>` names that source's definition).
    pub names: Vec<VmName>,
    /// The vsock port.
    pub port: u32,
    /// Where each listener goes.
    pub socket: SocketTemplate,
    /// The VM directory (`{vm-dir}`).
    pub vm_dir: PathBuf,
    /// Who may connect.
    pub access: Access,
    /// Whether the daemon makes a missing directory above a listener
    /// (the default layout) or waits for the VM's hook to make it
    /// (Spectrum's `/run/vsock/<id>`).
    pub parent: Parent,
}

/// One listener.
#[derive(Debug)]
struct Listening {
    vm: VmName,
    bound: socket::Bound,
    stop: Stop,
}

/// The listeners bound now, by path; shared with whoever must see a VM's
/// listener gone at once (the VM's `release` hook runs only after it is).
#[derive(Debug, Clone, Default)]
pub struct Listeners(Arc<Mutex<BTreeMap<PathBuf, Listening>>>);

impl Listeners {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<PathBuf, Listening>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the listener of the VM `vm` now, if it has one, and ends its
    /// connections (as when it leaves the published catalog): called
    /// before the VM is released, so that nothing of the daemon's is left
    /// in its directories. Until the VM is active again in a later
    /// publish, it gets no listener.
    pub fn release(&self, vm: &VmName) {
        self.lock().retain(|path, l| l.vm != *vm || !l.close(path));
    }
}

impl Listening {
    /// Removes the socket and ends its connections; `true`.
    fn close(&self, path: &std::path::Path) -> bool {
        tracing::info!(vm = %self.vm, path = %path.display(), "UI VM listener removed");
        self.bound.remove();
        self.stop.stop(LEFT_GOODBYE);
        true
    }
}

/// The UI VMs' listeners of a daemon.
#[derive(Debug)]
pub struct UiVms {
    ctx: Arc<Ctx>,
    config: UiVmConfig,
    tracker: TaskTracker,
    listening: Listeners,
}

impl UiVms {
    /// Listens for every UI VM active in the published catalog now (so a
    /// daemon that says it is ready has them). Within a tokio runtime.
    pub fn start(ctx: Arc<Ctx>, config: UiVmConfig) -> UiVms {
        UiVms::start_with(ctx, config, Listeners::default())
    }

    /// [`UiVms::start`], keeping its listeners in `listening` (a handle the
    /// caller shares with what releases VMs).
    pub fn start_with(ctx: Arc<Ctx>, config: UiVmConfig, listening: Listeners) -> UiVms {
        let mut vms = UiVms {
            ctx,
            config,
            tracker: TaskTracker::new(),
            listening,
        };
        vms.sync();
        vms
    }

    /// Follows the catalog until the daemon stops; then removes the
    /// listeners and waits for their connections to end.
    pub async fn run(mut self) {
        let mut published = self.ctx.hub.published();
        loop {
            tokio::select! {
                _ = self.ctx.shutdown.cancelled() => break,
                changed = published.changed() => if changed.is_err() { break },
            }
            self.sync();
        }
        for l in self.listening.lock().values() {
            l.bound.remove();
        }
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Makes the listeners those of the catalog published now. A refused
    /// listener is also noted for the VM's entry (`listener-refused`), and a
    /// note that changed asks for the rescan that shows it.
    fn sync(&mut self) {
        let ctx = &self.ctx;
        let snapshot = ctx.hub.current();
        let wanted = wanted(&self.config, &snapshot);
        if self.bind_wanted(&wanted) {
            ctx.rescans.trigger(RescanTrigger::Retry);
        }
    }

    /// Removes the listeners not in `wanted` and binds those missing;
    /// whether the notes of refused listeners changed.
    fn bind_wanted(&self, wanted: &BTreeMap<PathBuf, (VmName, Option<VmId>)>) -> bool {
        let ctx = &self.ctx;
        let notes = ctx.hub.notes();
        notes.retain(|vm| wanted.values().any(|(w, _)| w == vm));
        let mut changed = false;
        let mut listening = self.listening.lock();
        listening.retain(|path, l| {
            wanted.get(path).is_some_and(|(vm, _)| *vm == l.vm) || !l.close(path)
        });
        for (path, (vm, id)) in wanted {
            if listening.contains_key(path) {
                continue;
            }
            let (path, vm) = (path.clone(), vm.clone());
            let bound = self.bind(&path, &vm, id.as_ref());
            let refusal = match &bound {
                Err(e) if !e.is_waiting() => Some(e.to_string()),
                _ => None,
            };
            changed |= notes.set(&vm, DiagCode::ListenerRefused, refusal);
            match bound {
                Ok((listener, bound)) => {
                    tracing::info!(vm = %vm, path = %path.display(), "UI VM listener");
                    let stop = Stop::under(&ctx.shutdown);
                    let admit = Vm {
                        name: vm.clone(),
                        share: ctx.limits.vm_share(),
                        stop: stop.clone(),
                    };
                    self.tracker.spawn(accept::run(
                        listener,
                        admit,
                        ctx.clone(),
                        stop.clone(),
                        self.tracker.clone(),
                    ));
                    listening.insert(path, Listening { vm, bound, stop });
                }
                // Tried again at the next publish. Waiting for the VM's hook
                // to make its directory or user is no fault.
                Err(e) if e.is_waiting() => {
                    tracing::debug!(vm = %vm, error = %e, "no listener for the UI VM yet");
                }
                Err(e) => {
                    if ctx.log_limit.allow() {
                        tracing::warn!(vm = %vm, error = %e, "no listener for the UI VM");
                    }
                }
            }
        }
        changed
    }

    /// Binds the listener of `vm` at `path`.
    fn bind(
        &self,
        path: &std::path::Path,
        vm: &VmName,
        id: Option<&VmId>,
    ) -> Result<(UnixListener, socket::Bound), BindFailure> {
        let perms = self.config.access.perms(vm, id)?;
        let (l, bound) = socket::bind(path, perms, self.config.parent)?;
        match UnixListener::from_std(l) {
            Ok(l) => Ok((l, bound)),
            Err(source) => {
                bound.remove();
                Err(BindFailure::Bind(socket::BindError::Io {
                    what: "cannot listen on",
                    path: path.to_owned(),
                    source,
                }))
            }
        }
    }
}

/// Why a UI VM has no listener (yet).
#[derive(Debug, thiserror::Error)]
enum BindFailure {
    #[error(transparent)]
    Owner(#[from] owner::OwnerError),
    #[error(transparent)]
    Bind(#[from] socket::BindError),
}

impl BindFailure {
    /// Whether this is only something the VM's hook has not made yet.
    fn is_waiting(&self) -> bool {
        matches!(
            self,
            BindFailure::Owner(owner::OwnerError::NoUser(_))
                | BindFailure::Bind(socket::BindError::Missing(_))
        )
    }
}

/// The listener path of every UI VM active in `snapshot`, and the VM's
/// catalog name and id.
fn wanted(config: &UiVmConfig, snapshot: &Published) -> BTreeMap<PathBuf, (VmName, Option<VmId>)> {
    let mut out = BTreeMap::new();
    for name in &config.names {
        let Some((vm, _)) = snapshot.lookup(name.as_str()) else {
            continue;
        };
        if vm.state != VmState::Active {
            continue;
        }
        let Some(path) =
            config
                .socket
                .expand(&config.vm_dir, &vm.name, vm.id.as_ref(), config.port)
        else {
            continue;
        };
        out.insert(path, (vm.name.clone(), vm.id.clone()));
    }
    out
}

/// A UI VM's admission: every peer is the VM, drawing only on its own
/// ledgers and refusal slots.
struct Vm {
    name: VmName,
    share: VmShare,
    stop: Stop,
}

impl Admit for Vm {
    fn peer(&self, fd: BorrowedFd<'_>, conn_id: u64) -> std::io::Result<Peer> {
        Peer::vm(&fd, conn_id, self.name.clone())
    }

    fn admit(&self, _: &Arc<Ctx>, _: &Peer) -> Admission {
        let share = &self.share;
        match share.connections.try_claim(Tenant::Vm, 1) {
            Some(slot) => Admission::Serve(Admitted {
                slot,
                draws: Draws {
                    tenant: Tenant::Vm,
                    replies: share.replies.clone(),
                },
                calls: Some(share.calls.clone()),
                stop: self.stop.clone(),
                registration: None,
            }),
            // Refused from the VM's own refusal slots, never the host's.
            None => Admission::Refuse(share.refusals.clone().try_acquire_owned().ok()),
        }
    }
}
