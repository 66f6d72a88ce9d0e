//! The raw `SOCK_SEQPACKET` echo server: the physical floor of a round trip.
//!
//! It runs in its own process (this binary, re-executed with [`ARG`]), so a
//! round trip to it crosses processes as one to the daemon does: a thread
//! per connection, blocking `recv` then `send`, no parsing, no runtime.
//!
//! A connection's first datagram sets its answers: a little-endian `u32`
//! count, then that many `u32` datagram sizes. Every later datagram is
//! answered with datagrams of exactly those sizes (zeros), so the floor of a
//! `ListVms` moves the same bytes in the same number of datagrams as the
//! daemon's pages and end frame.

use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::raw::{Listener, Seqpacket};

/// The hidden first argument that makes this binary the echo server.
pub(crate) const ARG: &str = "__echo-server";

/// Serves at `socket` forever (the parent kills us; we die with it).
pub(crate) fn serve(socket: &Path) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    let listener = Listener::bind(socket)?;
    println!("ready");
    loop {
        let conn = listener.accept()?;
        std::thread::spawn(move || {
            let _ = echo(&conn);
        });
    }
}

fn echo(conn: &Seqpacket) -> io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let n = conn.recv(&mut buf)?;
    let sizes = parse_setup(&buf[..n])?;
    let replies: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0u8; s]).collect();
    loop {
        if conn.recv(&mut buf)? == 0 {
            return Ok(());
        }
        for r in &replies {
            conn.send(r)?;
        }
    }
}

/// The setup datagram for answers of `sizes` bytes.
pub(crate) fn setup(sizes: &[usize]) -> Vec<u8> {
    let mut b = (sizes.len() as u32).to_le_bytes().to_vec();
    for &s in sizes {
        b.extend_from_slice(&(s as u32).to_le_bytes());
    }
    b
}

fn parse_setup(b: &[u8]) -> io::Result<Vec<usize>> {
    let word = |i: usize| -> io::Result<usize> {
        b.get(4 * i..4 * i + 4)
            .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize)
            .ok_or_else(|| io::Error::other("short setup datagram"))
    };
    let count = word(0)?;
    let sizes = (1..=count).map(word).collect::<io::Result<Vec<_>>>()?;
    if sizes.is_empty() || sizes.contains(&0) {
        return Err(io::Error::other("answers must be non-empty datagrams"));
    }
    Ok(sizes)
}

/// A running echo server process on a socket in its own temp dir; killed
/// (and the dir removed) on drop.
#[derive(Debug)]
pub(crate) struct EchoServer {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl EchoServer {
    /// Starts the server and waits until it listens.
    pub(crate) fn start() -> io::Result<EchoServer> {
        EchoServer::spawn(ARG)
    }

    /// Starts this binary re-executed with `arg` and the socket path (an
    /// echo of some kind that prints `ready` once it listens), and waits
    /// until it listens.
    pub(crate) fn spawn(arg: &str) -> io::Result<EchoServer> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("echo");
        let mut child = Command::new(std::env::current_exe()?)
            .arg(arg)
            .arg(&socket)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let mut line = String::new();
        let out = child.stdout.take().expect("piped stdout");
        let read = BufReader::new(out).read_line(&mut line);
        let server = EchoServer {
            child,
            socket,
            _dir: dir,
        };
        match read {
            Ok(_) if line == "ready\n" => Ok(server),
            Ok(_) => Err(io::Error::other(
                "the echo server exited before it was ready",
            )),
            Err(e) => Err(e),
        }
    }

    /// Where it listens.
    pub(crate) fn socket(&self) -> &Path {
        &self.socket
    }

    /// A connection whose every datagram is answered with datagrams of `sizes`.
    pub(crate) fn connect(&self, sizes: &[usize]) -> io::Result<Seqpacket> {
        let c = Seqpacket::connect(&self.socket)?;
        c.send(&setup(sizes))?;
        Ok(c)
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_round_trips_and_refuses_empty_answers() {
        assert_eq!(
            parse_setup(&setup(&[65, 30_000, 40])).unwrap(),
            [65, 30_000, 40]
        );
        assert!(parse_setup(&setup(&[])).is_err());
        assert!(parse_setup(&setup(&[0])).is_err());
        assert!(parse_setup(&[1, 0, 0, 0, 9]).is_err());
    }

    #[test]
    fn a_connection_gets_answers_of_the_sizes_it_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = Listener::bind(&path).unwrap();
        let client = Seqpacket::connect(&path).unwrap();
        let server = listener.accept().unwrap();
        let t = std::thread::spawn(move || echo(&server));
        client.send(&setup(&[3, 1000])).unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..2 {
            client.send(b"ping").unwrap();
            assert_eq!(client.recv(&mut buf).unwrap(), 3);
            assert_eq!(client.recv(&mut buf).unwrap(), 1000);
        }
        drop(client);
        t.join().unwrap().unwrap();
    }
}
