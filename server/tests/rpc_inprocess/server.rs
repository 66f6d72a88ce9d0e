//! The harness: the real server on a temp socket, a scripted pipeline.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vm_catalog_protocol::*;
use vm_catalogd::publish::{Hub, Published};
use vm_catalogd::rescan::{Pipeline, RescanError, RescanResult, Rescans};
use vm_catalogd::rpc::{self, Ctx, Limits, ServerInfo, listener};

pub(crate) use vm_catalog_tests::wire::{connect as raw, recv_frame};

/// Connects as user `uid` (a thread with that uid's credentials: see
/// `vm_catalog_tests::peers`) and says `Hello`: the `Welcome`, or the error
/// that refused the connection.
pub(crate) async fn hello_as(
    path: &std::path::Path,
    uid: u32,
) -> (tokio_seqpacket::UnixSeqpacket, Result<Welcome, ErrorBody>) {
    use vm_catalog_protocol::codec::{self, Compat};
    let creds = vm_catalog_tests::peers::Creds::user(uid);
    let s = vm_catalog_tests::peers::connect_async_as(path, &creds).expect("connect");
    let hello = Hello {
        client: "as-user".into(),
        versions: SUPPORTED_VERSIONS,
        max_frame: MIN_MAX_FRAME,
        features: Features::default(),
    };
    s.send(&message::hello(&hello).unwrap()).await.unwrap();
    let (h, body) = recv_frame(&s).await;
    let answer = match h.kind {
        FrameKind::Welcome => Ok(codec::decode(&body, Compat::Exact).unwrap()),
        FrameKind::Error => Err(codec::decode(&body, Compat::Exact).unwrap()),
        k => panic!("{k:?} instead of Welcome"),
    };
    (s, answer)
}

/// Publishes whatever the test queued: each rescan takes the next list of
/// entries and publishes it as one generation (every entry `Changed`).
///
/// A rescan first takes `hold`: a test that holds it keeps every rescan
/// waiting (a rescan that takes long).
struct Scripted {
    hub: Arc<Hub>,
    next: Arc<Mutex<Vec<Vec<VmEntry>>>>,
    hold: Arc<tokio::sync::Mutex<()>>,
}

impl Pipeline for Scripted {
    fn rescan(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        self.run(trigger, false)
    }

    fn dry_run(&mut self, trigger: RescanTrigger) -> Result<RescanResult, RescanError> {
        self.run(trigger, true)
    }
}

impl Scripted {
    fn run(&mut self, trigger: RescanTrigger, dry_run: bool) -> Result<RescanResult, RescanError> {
        let _held = self.hold.blocking_lock();
        let current = self.hub.current();
        let vms = self.next.lock().unwrap().pop();
        let before = current.cursor.generation;
        let (changes, generation) = match vms {
            Some(vms) if !dry_run => {
                let generation = before + 1;
                let changes: Vec<Change> = vms
                    .iter()
                    .map(|e| Change {
                        generation,
                        kind: ChangeKind::Changed,
                        item: ChangeItem::Vm(e.clone()),
                    })
                    .collect();
                let mut p = (*current).clone();
                p.cursor.generation = generation;
                p.vms = vms.into_iter().map(Arc::new).collect();
                self.hub.publish(p, changes.clone());
                (changes, generation)
            }
            _ => (vec![], before),
        };
        Ok(RescanResult {
            outcome: RescanOutcome {
                trigger,
                dry_run,
                generation_before: before,
                generation,
                changes: changes.len() as u32,
                started_unix_ms: 0,
                duration_us: 0,
                apply: ApplyOutcome {
                    status: ApplyStatus::Disabled,
                    generation,
                    database: None,
                    services: 0,
                    duration_us: 0,
                    message: String::new(),
                },
            },
            changes,
        })
    }
}

/// The real `rpc::serve` on a socket in a temp dir, with a scripted pipeline.
pub(crate) struct Server {
    _dir: tempfile::TempDir,
    /// The socket.
    pub path: std::path::PathBuf,
    hub: Arc<Hub>,
    /// The catalogs the next rescans publish, last first.
    pub next: Arc<Mutex<Vec<Vec<VmEntry>>>>,
    /// Held, keeps every rescan waiting.
    pub hold: Arc<tokio::sync::Mutex<()>>,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    /// What every connection shares (the ledgers, to look at).
    pub ctx: Arc<Ctx>,
}

impl Server {
    /// Starts serving with these limits and admin group.
    pub(crate) async fn start(limits: Limits, admin_gid: Option<u32>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("socket");
        let hub = Hub::new(Epoch(0xfeed));
        let next = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::Mutex::new(()));
        let (rescans, _worker) = Rescans::spawn(Scripted {
            hub: hub.clone(),
            next: next.clone(),
            hold: hold.clone(),
        });
        let shutdown = CancellationToken::new();
        let info = ServerInfo {
            version: "vm-catalogd test".into(),
            applier: "none",
            features: Features::default(),
            started_unix_ms: 0,
        };
        let ctx = Ctx::new(
            hub.clone(),
            rescans,
            info,
            admin_gid,
            limits,
            shutdown.clone(),
        );
        let (l, bound) = listener::bind(&listener::SocketOptions {
            path: path.clone(),
            mode: 0o666,
            group: None,
        })
        .unwrap();
        let served = tokio::spawn({
            let ctx = ctx.clone();
            async move {
                rpc::serve(l, ctx).await;
                drop(bound);
            }
        });
        Server {
            _dir: dir,
            path,
            hub,
            next,
            hold,
            shutdown,
            served,
            ctx,
        }
    }

    /// Publishes `vms` as the next generation (every entry `Added`).
    pub(crate) fn publish(&self, vms: Vec<VmEntry>) -> u64 {
        let current = self.hub.current();
        let generation = current.cursor.generation + 1;
        let changes = vms
            .iter()
            .map(|e| Change {
                generation,
                kind: ChangeKind::Added,
                item: ChangeItem::Vm(e.clone()),
            })
            .collect();
        let mut p: Published = (*current).clone();
        p.cursor.generation = generation;
        p.vms = vms.into_iter().map(Arc::new).collect();
        self.hub.publish(p, changes);
        generation
    }

    /// Stops the server and waits for it (at most 10 s).
    pub(crate) async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.served)
            .await
            .unwrap()
            .unwrap();
    }
}

/// A VM entry from the built-in source.
pub(crate) fn entry(name: &str, state: VmState) -> VmEntry {
    VmEntry {
        name: name.parse().unwrap(),
        source: "builtin".parse().unwrap(),
        state,
        path: format!("/usr/img/builtin/{name}"),
        view: Some(format!("/run/vm/{name}/config")),
        service: None,
        providers: vec![],
        diagnostics: vec![],
        restart_pending: false,
        shadowed_by: None,
        revision: 1,
        fingerprint: None,
        id: None,
    }
}

/// `n` active entries, sorted by name.
pub(crate) fn many(n: usize) -> Vec<VmEntry> {
    (0..n)
        .map(|i| entry(&format!("vm-{i:05}"), VmState::Active))
        .collect()
}
