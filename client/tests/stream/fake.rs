//! A scripted daemon on a Unix stream socket, for what the real daemon
//! never sends (garbage, a frame larger than negotiated, a frame cut short,
//! a `Welcome` one byte at a time) and for checking every byte a client
//! writes. It runs a script on a thread, with the accepted connection.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::JoinHandle;

use vm_catalog_protocol::codec::{self, Compat};
use vm_catalog_protocol::stream::StreamFramer;
use vm_catalog_protocol::{
    DEFAULT_MAX_FRAME, Epoch, Features, FrameKind, HANDSHAKE_MAX_FRAME, Header, Hello,
    SUPPORTED_VERSIONS, Welcome, decode_frame, message,
};

/// A fake daemon listening at `path` (in a temp dir it owns).
pub(crate) struct Fake {
    _dir: tempfile::TempDir,
    /// The socket.
    pub path: PathBuf,
    script: Option<JoinHandle<()>>,
}

impl Fake {
    /// Listens and runs `script` on the first connection.
    pub(crate) fn serve(script: impl FnOnce(Peer) + Send + 'static) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vsock_22083");
        let listener = UnixListener::bind(&path).unwrap();
        let script = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            script(Peer {
                stream,
                framer: StreamFramer::new(HANDSHAKE_MAX_FRAME),
            });
        });
        Fake {
            _dir: dir,
            path,
            script: Some(script),
        }
    }

    /// Waits for the script to end; its panics fail the test.
    pub(crate) fn join(mut self) {
        if let Some(s) = self.script.take() {
            s.join().expect("the fake daemon's script");
        }
    }
}

/// The fake daemon's end of a connection.
pub(crate) struct Peer {
    stream: UnixStream,
    framer: StreamFramer,
}

impl Peer {
    /// The next frame the client sent (checked as a datagram would be);
    /// `None` at a clean end of the stream.
    pub(crate) fn recv(&mut self) -> Option<(Header, Vec<u8>)> {
        while !self.framer.has_frame().expect("a well-formed stream") {
            let n = self.stream.read(self.framer.space()).unwrap();
            if n == 0 {
                self.framer
                    .finish()
                    .expect("the client ends between frames");
                return None;
            }
            self.framer.filled(n);
        }
        let max = self.framer.max_frame();
        let frame = self.framer.next_frame().unwrap().unwrap();
        let f = decode_frame(frame, max).expect("a valid frame");
        Some((f.header, f.body.to_vec()))
    }

    /// Reads `Hello` and answers `Welcome` (max frame 64 KiB), in pieces of
    /// `piece` bytes.
    pub(crate) fn handshake(&mut self, piece: usize) -> Hello {
        let (h, body) = self.recv().expect("a Hello");
        assert_eq!(h.kind, FrameKind::Hello);
        let hello: Hello = codec::decode(&body, Compat::Exact).unwrap();
        let welcome = Welcome {
            version: 1,
            server: "fake".into(),
            epoch: Epoch(7),
            max_frame: DEFAULT_MAX_FRAME,
            features: Features::default(),
            supported: SUPPORTED_VERSIONS,
        };
        for chunk in message::welcome(&welcome).unwrap().chunks(piece) {
            self.send(chunk);
        }
        self.framer.set_max_frame(DEFAULT_MAX_FRAME);
        hello
    }

    /// Writes bytes.
    pub(crate) fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
        self.stream.flush().unwrap();
    }

    /// Ends the connection.
    pub(crate) fn close(self) {
        drop(self);
    }
}
