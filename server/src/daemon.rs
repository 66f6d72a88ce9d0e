//! The daemon's life: start-up, serving, shutdown.
//!
//! Start-up order: bind the socket (it queues connections, nobody is
//! served yet), bind the uevent listener (before the first partition
//! reconcile, so that no hotplug event is missed), open the applier
//! (adopting an existing live database), install the signal handlers, run
//! the first rescan and apply, then serve, start the triggers, and say
//! ready. The triggers only send to the rescan worker; what the inotify
//! trigger watches comes back from the rescans on a channel made here. Shutdown
//! (`SIGTERM`, `SIGINT`): stop accepting, let the apply in flight finish, say
//! goodbye to every connection, remove the socket, exit 0. Mounted
//! partitions stay mounted: running VMs use them.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use tokio_seqpacket::UnixSeqpacketListener;
use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::{Epoch, Features, RescanTrigger};

use crate::cli::ApplyKind;
use crate::config::Config;
use crate::publish::Hub;
use crate::rescan::{PipelineError, RealPipeline, Rescans, now_unix_ms};
use crate::rpc::{self, Ctx, ServerInfo, listener::BoundSocket};
use crate::source::partition::UeventListener;
use crate::triggers::{self, inotify, signal::Signals};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The pipeline (applier, partitions) could not be set up.
    #[error("cannot start")]
    Pipeline(#[source] PipelineError),
    /// A signal handler could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// The readiness file descriptor could not be written.
    #[error("cannot write readiness to fd {fd}")]
    Notify {
        fd: i32,
        #[source]
        source: std::io::Error,
    },
}

/// A random epoch: generations restart with every daemon run.
pub fn new_epoch() -> Epoch {
    let mut b = [0u8; 8];
    // Without randomness, the start time still tells runs apart.
    if getrandom::fill(&mut b).is_err() {
        b = now_unix_ms().to_le_bytes();
    }
    Epoch(u64::from_le_bytes(b))
}

/// The UI VM listeners, shared with the hooks stage: a UI VM's listener
/// lives in a directory its hook made, so it goes before the VM's `release`
/// hook runs, not at the next publish.
fn released_before_their_hook(pipeline: &mut RealPipeline) -> rpc::ui_vm::Listeners {
    let listeners = rpc::ui_vm::Listeners::default();
    let releasing = listeners.clone();
    pipeline.before_release(Box::new(move |vm| releasing.release(vm)));
    listeners
}

/// Runs the daemon on `listener` until SIGTERM or SIGINT (or `shutdown`).
pub async fn run(
    config: Config,
    listener: UnixSeqpacketListener,
    mut bound: BoundSocket,
    shutdown: CancellationToken,
) -> Result<(), DaemonError> {
    raise_fd_limit();
    let hub = Hub::new(new_epoch());
    let (watched, watch_rx) = tokio::sync::watch::channel(Arc::new(Default::default()));
    let uevents = bind_uevents(&config);
    let mut pipeline = RealPipeline::open(&config.pipeline, hub.clone(), watched)
        .map_err(DaemonError::Pipeline)?;
    let listeners = released_before_their_hook(&mut pipeline);
    let (rescans, worker) = Rescans::spawn(pipeline);
    let signals = Signals::install().map_err(DaemonError::Signals)?;

    match rescans.rescan(RescanTrigger::Startup, false).await {
        Ok(r) => tracing::info!(
            generation = r.outcome.generation,
            active = hub.current().active_count(),
            apply = r.outcome.apply.status.as_str(),
            "first scan done"
        ),
        Err(e) => tracing::error!(error = %e, "first scan failed"),
    }

    let ctx = Ctx::new(
        hub.clone(),
        rescans.clone(),
        server_info(&config),
        config.admin_gid,
        config.limits.clone(),
        shutdown.clone(),
    );
    let ui_vms = config
        .ui_vms
        .clone()
        .map(|c| tokio::spawn(rpc::ui_vm::UiVms::start_with(ctx.clone(), c, listeners).run()));
    let server = tokio::spawn(rpc::serve(listener, ctx));
    if let Some(debounce) = config.watch {
        tokio::spawn(inotify::run(
            watch_rx,
            rescans.clone(),
            debounce,
            shutdown.clone(),
        ));
    }
    if let Some(uevents) = uevents {
        tokio::spawn(triggers::uevent::run(
            uevents,
            rescans.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(fd) = config.notify_fd {
        notify_ready(fd).map_err(|source| DaemonError::Notify { fd, source })?;
    }
    tracing::info!(socket = ?bound.path(), epoch = %hub.epoch(), "ready");

    signals.run(&rescans, &shutdown).await;
    tracing::info!("stopping");
    shutdown.cancel();
    // Connections say goodbye within their grace period and every send has
    // a deadline; this bound only guards against a bug there.
    let stopped = tokio::time::timeout(SERVER_STOP_DEADLINE, async {
        let _ = server.await;
        if let Some(ui_vms) = ui_vms {
            let _ = ui_vms.await;
        }
    });
    if stopped.await.is_err() {
        tracing::warn!("connections did not close in time; stopping anyway");
    }
    // The worker finishes the rescan (and apply) in flight, then stops.
    rescans.stop();
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
    bound.remove();
    tracing::info!("stopped");
    Ok(())
}

/// The block device uevent listener, when partitions are looked for; `None`
/// (partitions are then seen on rescans only) when it cannot be bound.
fn bind_uevents(config: &Config) -> Option<UeventListener> {
    let group = config.pipeline.partitions.as_ref()?.uevent_group;
    UeventListener::bind(group)
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot listen to block device uevents; partitions are seen on rescans only");
        })
        .ok()
}

/// What `GetInfo` says about this daemon.
fn server_info(config: &Config) -> ServerInfo {
    let applier = config.pipeline.apply.kind();
    let mut features = Features::default();
    if matches!(applier, ApplyKind::S6rc | ApplyKind::S6Instance) {
        features = features | Features::APPLIER;
    }
    if config.pipeline.partitions.is_some() {
        features = features | Features::PARTITIONS;
    }
    ServerInfo {
        version: format!("vm-catalogd {}", env!("CARGO_PKG_VERSION")),
        applier: applier.as_str(),
        features,
        started_unix_ms: now_unix_ms(),
    }
}

/// How long shutdown waits for the connections to close.
const SERVER_STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Raises the soft limit on open files to the hard limit: every client
/// connection holds a descriptor, and scans need some too.
fn raise_fd_limit() {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    if lim.current < lim.maximum {
        let new = rustix::process::Rlimit {
            current: lim.maximum,
            maximum: lim.maximum,
        };
        if let Err(e) = rustix::process::setrlimit(rustix::process::Resource::Nofile, new) {
            tracing::warn!(error = %e, "cannot raise the open files limit");
        }
    }
}

/// Writes the readiness newline and closes the descriptor (s6's protocol).
fn notify_ready(fd: i32) -> std::io::Result<()> {
    // SAFETY: the descriptor was handed to us for exactly this purpose
    // (`--notify-fd`); nothing else in the process uses it, and the File
    // closes it when dropped, as the readiness protocol wants.
    let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.write_all(b"\n")
}
