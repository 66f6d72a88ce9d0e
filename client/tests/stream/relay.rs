//! A stand-in for the daemon's stream listener of a UI VM, which does not
//! exist yet: it accepts Unix stream connections, as the daemon will on
//! `<vm-dir>/<NAME>/vsock_<PORT>`, and relays each, frame by frame, to the
//! real daemon's `SOCK_SEQPACKET` socket. What a test connects to it is
//! exactly what the VMM connects for a guest.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::runtime::Runtime;
use tokio::task::AbortHandle;
use tokio_seqpacket::UnixSeqpacket;
use vm_catalog_protocol::LIMIT_MAX_FRAME;
use vm_catalog_protocol::stream::StreamFramer;

/// A listening relay; dropping it ends every connection.
pub struct Relay {
    path: PathBuf,
    conns: Arc<Mutex<Vec<AbortHandle>>>,
    rt: Option<Runtime>,
}

impl Relay {
    /// Listens on `path`, relaying to the daemon's socket `daemon`.
    pub fn start(daemon: &Path, path: &Path) -> Relay {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let conns = Arc::new(Mutex::new(Vec::new()));
        let daemon = daemon.to_owned();
        let accepted = conns.clone();
        rt.spawn(async move {
            let listener = UnixListener::from_std(listener).unwrap();
            while let Ok((stream, _)) = listener.accept().await {
                let task = tokio::spawn(relay(stream, daemon.clone()));
                accepted.lock().unwrap().push(task.abort_handle());
            }
        });
        Relay {
            path: path.to_owned(),
            conns,
            rt: Some(rt),
        }
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends every connection so far (the guest's connection breaks); new
    /// ones are still accepted.
    pub fn cut(&self) {
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Connections accepted so far and not cut.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap().len()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        let _ = std::fs::remove_file(&self.path);
        // Also from inside a test's runtime.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Relays one connection until either side ends it.
async fn relay(stream: UnixStream, daemon: PathBuf) {
    let Ok(seq) = UnixSeqpacket::connect(&daemon).await else {
        return;
    };
    let (mut rd, mut wr) = stream.into_split();
    let up = async {
        // The daemon checks every frame; the relay only finds their ends.
        let mut framer = StreamFramer::new(LIMIT_MAX_FRAME);
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let mut at = 0;
            while at < n {
                at += framer.push(&buf[at..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => {
                            if seq.send(frame).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
            }
        }
    };
    let down = async {
        let mut buf = vec![0; LIMIT_MAX_FRAME as usize + 1];
        loop {
            let n = match seq.recv(&mut buf).await {
                Ok(info) if info.bytes_read() > 0 => info.bytes_read(),
                _ => return,
            };
            if wr.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}
