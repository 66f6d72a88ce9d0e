//! The relay against a guest driver played here: split rings in a guest
//! memory of the test's own, packets written and read as the guest's
//! virtio-vsock driver does, and real Unix sockets on the host's side.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};

use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryAtomic, GuestMemoryMmap};

use super::*;
use crate::credit::BUF_ALLOC;

const SIZE: u16 = 16;
const GUEST_CID: u64 = 3;
const PORT: u32 = 22083;
const GUEST_PORT: u32 = 1000;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

/// One split ring as the guest's driver keeps it.
struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    /// Where this ring's buffers are.
    bufs: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

impl Ring {
    fn new(base: u64) -> Ring {
        Ring {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            bufs: base + 0x10000,
            next_desc: 0,
            avail_idx: 0,
            used_seen: 0,
        }
    }

    fn vring(&self, mem: &Mem) -> VringRwLock {
        let v = VringRwLock::new(mem.clone(), 256).unwrap();
        v.set_queue_size(SIZE);
        v.set_queue_info(self.desc, self.avail, self.used).unwrap();
        v.set_queue_ready(true);
        v
    }

    /// Offers a chain of buffers (`(len, device-writable)`), each in its
    /// own place; returns their addresses.
    fn offer(&mut self, mem: &GuestMemoryMmap, bufs: &[(u32, bool)]) -> Vec<u64> {
        let head = self.next_desc;
        let mut addrs = Vec::new();
        for (i, &(len, write)) in bufs.iter().enumerate() {
            let index = self.next_desc;
            self.next_desc = (self.next_desc + 1) % SIZE;
            let addr = self.bufs + u64::from(index) * 0x1_0000;
            let mut flags = if write { F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= F_NEXT;
            }
            let d = self.desc + u64::from(index) * 16;
            mem.write_obj(addr, GuestAddress(d)).unwrap();
            mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            mem.write_obj(self.next_desc, GuestAddress(d + 14)).unwrap();
            addrs.push(addr);
        }
        let slot = self.avail + 4 + u64::from(self.avail_idx % SIZE) * 2;
        mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        addrs
    }

    /// The chains the device has used since last asked: (head, length).
    fn used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u16, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used + 4 + u64::from(self.used_seen % SIZE) * 8;
            let id: u32 = mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

/// A packet header's fields, as the guest sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Hdr {
    src_cid: u64,
    dst_cid: u64,
    src_port: u32,
    dst_port: u32,
    len: u32,
    op: u16,
    flags: u32,
    buf_alloc: u32,
    fwd_cnt: u32,
}

impl Hdr {
    fn from_guest(op: u16) -> Hdr {
        Hdr {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: GUEST_PORT,
            dst_port: PORT,
            len: 0,
            op,
            flags: 0,
            buf_alloc: 64 * 1024,
            fwd_cnt: 0,
        }
    }

    fn bytes(&self) -> [u8; PKT_HEADER_SIZE] {
        let mut b = [0u8; PKT_HEADER_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&TYPE_STREAM.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    fn parse(b: &[u8]) -> Hdr {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
        assert_eq!(u16::from_le_bytes([b[28], b[29]]), TYPE_STREAM);
        Hdr {
            src_cid: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            dst_cid: u64::from_le_bytes(b[8..16].try_into().unwrap()),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            op: u16::from_le_bytes([b[30], b[31]]),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }
}

/// The relay, its queues, the guest's view of them, and the host's
/// listener for `PORT`.
struct Rig {
    relay: Relay,
    mem: Mem,
    vrings: Vec<VringRwLock>,
    rx: Ring,
    tx: Ring,
    /// The guest's receive buffers on offer: head → (header, data) address.
    rx_bufs: HashMap<u16, (u64, u64)>,
    _epoll: OwnedFd,
    _dir: tempfile::TempDir,
    listener: UnixListener,
}

impl Rig {
    fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vsock");
        let listener = UnixListener::bind(unix::port_path(&uds, PORT)).unwrap();
        let mem: Mem = GuestMemoryAtomic::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x80_0000)]).unwrap(),
        );
        // SAFETY: a plain epoll_create1(2).
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        // SAFETY: the test owns the new epoll fd alone.
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let mut relay = Relay::new(GUEST_CID, uds).unwrap();
        relay.set_epoll(epoll.as_raw_fd());
        relay.update_memory(mem.clone()).unwrap();
        relay.set_event_idx(false);
        let rx = Ring::new(0x10_0000);
        let tx = Ring::new(0x40_0000);
        let vrings = vec![
            rx.vring(&mem),
            tx.vring(&mem),
            Ring::new(0x70_0000).vring(&mem),
        ];
        let mut rig = Rig {
            relay,
            mem,
            vrings,
            rx,
            tx,
            rx_bufs: HashMap::new(),
            _epoll: epoll,
            _dir: dir,
            listener,
        };
        for _ in 0..4 {
            rig.offer_rx(4096);
        }
        rig
    }

    fn offer_rx(&mut self, data_len: u32) {
        let head = self.rx.next_desc;
        let a = self.rx.offer(
            &self.mem.memory(),
            &[(PKT_HEADER_SIZE as u32, true), (data_len, true)],
        );
        self.rx_bufs.insert(head, (a[0], a[1]));
    }

    /// The guest sends `hdr` (with `data`) and kicks the transmit queue.
    fn send(&mut self, mut hdr: Hdr, data: &[u8]) {
        hdr.len = data.len() as u32;
        self.put_tx(&hdr.bytes(), PKT_HEADER_SIZE as u32, data, false);
    }

    /// The guest puts `header` in a descriptor of `header_len` bytes, and
    /// `data` (if any) in a second one (device-writable if `writable`, which
    /// is invalid on the transmit queue), and kicks the transmit queue; the
    /// relay uses the chain whatever it holds.
    fn put_tx(&mut self, header: &[u8], header_len: u32, data: &[u8], writable: bool) {
        let mem = self.mem.memory();
        let mut bufs = vec![(header_len, false)];
        if !data.is_empty() {
            bufs.push((data.len() as u32, writable));
        }
        let a = self.tx.offer(&mem, &bufs);
        mem.write_slice(header, GuestAddress(a[0])).unwrap();
        if !data.is_empty() {
            mem.write_slice(data, GuestAddress(a[1])).unwrap();
        }
        drop(mem);
        self.relay
            .handle_event(TX, EventSet::IN, &self.vrings, 0)
            .unwrap();
        assert_eq!(
            self.tx.used(&self.mem.memory()).len(),
            1,
            "every packet is used, malformed or not"
        );
    }

    /// The connection's socket is ready, as the worker's epoll would say.
    fn socket_event(&mut self, events: EventSet) {
        self.socket_event_at(0, events);
    }

    /// The packets the guest received since last asked, each buffer given
    /// back to the ring.
    fn received(&mut self) -> Vec<(Hdr, Vec<u8>)> {
        let used = self.rx.used(&self.mem.memory());
        let mut out = Vec::new();
        for (head, len) in used {
            let (h, d) = self.rx_bufs.remove(&head).expect("an offered buffer");
            let mem = self.mem.memory();
            let mut hb = [0u8; PKT_HEADER_SIZE];
            mem.read_slice(&mut hb, GuestAddress(h)).unwrap();
            let hdr = Hdr::parse(&hb);
            assert_eq!(len as usize, PKT_HEADER_SIZE + hdr.len as usize);
            let mut data = vec![0u8; hdr.len as usize];
            mem.read_slice(&mut data, GuestAddress(d)).unwrap();
            drop(mem);
            out.push((hdr, data));
            self.offer_rx(4096);
        }
        out
    }

    /// Connects the guest's GUEST_PORT to PORT: the host's end.
    fn connected(&mut self, buf_alloc: u32) -> UnixStream {
        self.send(
            Hdr {
                buf_alloc,
                ..Hdr::from_guest(OP_REQUEST)
            },
            &[],
        );
        let (host, _) = self.listener.accept().unwrap();
        let got = self.received();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0.op, OP_RESPONSE);
        host
    }
}

fn ops(got: &[(Hdr, Vec<u8>)]) -> Vec<u16> {
    got.iter().map(|(h, _)| h.op).collect()
}

#[test]
fn a_guest_connection_reaches_the_ports_socket_and_bytes_flow_both_ways() {
    let mut rig = Rig::new();
    rig.send(Hdr::from_guest(OP_REQUEST), &[]);
    let (mut host, _) = rig.listener.accept().unwrap();
    let got = rig.received();
    assert_eq!(got.len(), 1);
    let response = got[0].0;
    assert_eq!(
        response,
        Hdr {
            src_cid: HOST_CID,
            dst_cid: GUEST_CID,
            src_port: PORT,
            dst_port: GUEST_PORT,
            len: 0,
            op: OP_RESPONSE,
            flags: 0,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: 0,
        }
    );

    rig.send(Hdr::from_guest(OP_RW), b"ping");
    let mut buf = [0u8; 4];
    host.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ping");

    host.write_all(b"pong").unwrap();
    rig.socket_event(EventSet::IN);
    let got = rig.received();
    assert_eq!(ops(&got), [OP_RW]);
    assert_eq!(got[0].1, b"pong");
    assert_eq!(got[0].0.fwd_cnt, 4, "the guest learns its 4 bytes went on");
}

#[test]
fn the_guest_is_sent_no_more_than_its_credit() {
    let mut rig = Rig::new();
    let mut host = rig.connected(3);
    host.write_all(b"hello").unwrap();
    rig.socket_event(EventSet::IN);
    let got = rig.received();
    // Out of credit, with bytes waiting: the relay asks, once.
    assert_eq!(ops(&got), [OP_RW, OP_CREDIT_REQUEST]);
    assert_eq!(got[0].1, b"hel");
    rig.socket_event(EventSet::IN);
    assert!(rig.received().is_empty(), "asked already");
    rig.send(
        Hdr {
            buf_alloc: 3,
            fwd_cnt: 3,
            ..Hdr::from_guest(OP_CREDIT_UPDATE)
        },
        &[],
    );
    let got = rig.received();
    assert_eq!(ops(&got), [OP_RW]);
    assert_eq!(got[0].1, b"lo");
}

#[test]
fn a_credit_request_is_answered_with_the_relays_counters() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    rig.send(Hdr::from_guest(OP_RW), b"abc");
    let mut buf = [0u8; 3];
    host.read_exact(&mut buf).unwrap();
    rig.send(Hdr::from_guest(OP_CREDIT_REQUEST), &[]);
    let got = rig.received();
    assert_eq!(ops(&got), [OP_CREDIT_UPDATE]);
    assert_eq!((got[0].0.buf_alloc, got[0].0.fwd_cnt), (BUF_ALLOC, 3));
}

#[test]
fn the_host_closing_is_a_shutdown_and_the_guest_closing_gets_a_reset() {
    let mut rig = Rig::new();
    let host = rig.connected(64 * 1024);
    drop(host);
    rig.socket_event(EventSet::IN | EventSet::HANG_UP);
    let got = rig.received();
    assert_eq!(ops(&got), [OP_SHUTDOWN]);
    assert_eq!(got[0].0.flags, SHUTDOWN_SEND);
    rig.send(
        Hdr {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..Hdr::from_guest(OP_SHUTDOWN)
        },
        &[],
    );
    assert_eq!(ops(&rig.received()), [OP_RST]);
    assert!(rig.relay.by_key.is_empty(), "the connection is gone");
}

#[test]
fn the_guest_shutting_its_sending_side_shuts_the_sockets_write_side() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    rig.send(Hdr::from_guest(OP_RW), b"last");
    rig.send(
        Hdr {
            flags: SHUTDOWN_SEND,
            ..Hdr::from_guest(OP_SHUTDOWN)
        },
        &[],
    );
    let mut all = Vec::new();
    host.read_to_end(&mut all).unwrap();
    assert_eq!(all, b"last");
    // The other direction still works.
    host.write_all(b"reply").unwrap();
    rig.socket_event(EventSet::IN);
    let got = rig.received();
    assert_eq!(got[0].1, b"reply");
}

#[test]
fn a_request_to_a_port_nobody_listens_on_is_reset() {
    let mut rig = Rig::new();
    rig.send(
        Hdr {
            dst_port: PORT + 1,
            ..Hdr::from_guest(OP_REQUEST)
        },
        &[],
    );
    let got = rig.received();
    assert_eq!(ops(&got), [OP_RST]);
    assert_eq!(got[0].0.src_port, PORT + 1);
}

#[test]
fn data_for_no_connection_is_reset_and_a_reset_for_none_is_ignored() {
    let mut rig = Rig::new();
    rig.send(Hdr::from_guest(OP_RW), b"stray");
    assert_eq!(ops(&rig.received()), [OP_RST]);
    rig.send(Hdr::from_guest(OP_RST), &[]);
    assert!(rig.received().is_empty());
}

#[test]
fn a_second_request_on_a_connection_resets_it() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    rig.send(Hdr::from_guest(OP_REQUEST), &[]);
    assert_eq!(ops(&rig.received()), [OP_RST]);
    let mut buf = Vec::new();
    assert_eq!(
        host.read_to_end(&mut buf).unwrap(),
        0,
        "the host's end closed"
    );
}

#[test]
fn packets_not_from_the_guests_cid_or_not_for_the_host_are_dropped() {
    let mut rig = Rig::new();
    rig.send(
        Hdr {
            src_cid: GUEST_CID + 1,
            ..Hdr::from_guest(OP_REQUEST)
        },
        &[],
    );
    rig.send(
        Hdr {
            dst_cid: 7,
            ..Hdr::from_guest(OP_REQUEST)
        },
        &[],
    );
    assert!(rig.received().is_empty());
    rig.listener.set_nonblocking(true).unwrap();
    assert!(rig.listener.accept().is_err(), "nothing connected");
}

#[test]
fn with_no_receive_buffer_the_socket_waits_until_the_guest_offers_one() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    // Take the guest's buffers away: used by four packets, not refilled.
    for i in 0..4 {
        host.write_all(&[i]).unwrap();
        rig.socket_event(EventSet::IN);
    }
    assert_eq!(rig.rx.used(&rig.mem.memory()).len(), 4);
    host.write_all(b"late").unwrap();
    rig.socket_event(EventSet::IN);
    assert!(rig.relay.rx_starved);
    let conn = rig.relay.conns[0].as_ref().unwrap();
    assert_eq!(conn.interest, 0, "not woken for bytes it cannot deliver");
    rig.offer_rx(4096);
    rig.relay
        .handle_event(RX, EventSet::IN, &rig.vrings, 0)
        .unwrap();
    let used = rig.rx.used(&rig.mem.memory());
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].1 as usize, PKT_HEADER_SIZE + 4);
}

/// A byte pattern, so that order and loss show.
fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

impl Rig {
    /// The guest sends [`pattern`] bytes on the connection until the
    /// host's socket is full and the relay holds some; returns how many.
    fn fill_socket(&mut self) -> usize {
        let mut sent = 0;
        while self.relay.conns[0].as_ref().unwrap().pending.is_empty() {
            self.send(Hdr::from_guest(OP_RW), &pattern(sent, 60_000));
            sent += 60_000;
            assert!(sent < 4 * 1024 * 1024, "the socket never filled");
        }
        sent
    }
}

#[test]
fn a_full_socket_keeps_the_guests_bytes_until_it_drains_then_tells_the_guest() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    let sent = rig.fill_socket();
    rig.relay.sync_interest();
    let conn = rig.relay.conns[0].as_ref().unwrap();
    assert_ne!(conn.interest & libc::EPOLLOUT as u32, 0, "waits to write");
    host.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < sent {
        match host.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => rig.socket_event(EventSet::OUT),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(got == pattern(0, sent), "every byte, in order");
    assert!(rig.relay.conns[0].as_ref().unwrap().pending.is_empty());
    // Told while it drained (half the credit back) and once drained.
    let told = rig.received();
    assert!(!told.is_empty() && ops(&told).iter().all(|&op| op == OP_CREDIT_UPDATE));
    assert_eq!(told.last().unwrap().0.fwd_cnt as usize, sent);
    let counts: Vec<u32> = told.iter().map(|(h, _)| h.fwd_cnt).collect();
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]),
        "no update twice for the same count: {counts:?}"
    );
}

#[test]
fn a_guest_sending_past_its_credit_is_reset() {
    let mut rig = Rig::new();
    let _host = rig.connected(64 * 1024);
    let mut sent = 0;
    loop {
        rig.send(Hdr::from_guest(OP_RW), &pattern(sent, 60_000));
        sent += 60_000;
        let got = rig.received();
        if ops(&got).contains(&OP_RST) {
            break;
        }
        let pending = rig.relay.conns[0].as_ref().unwrap().pending.len();
        assert!(pending <= BUF_ALLOC as usize, "{pending} bytes kept");
        assert!(sent < 8 * 1024 * 1024, "never reset");
    }
    assert!(rig.relay.by_key.is_empty(), "the connection is gone");
}

#[test]
fn a_guest_closing_with_bytes_held_is_reset_only_once_they_are_out() {
    let mut rig = Rig::new();
    let mut host = rig.connected(64 * 1024);
    let sent = rig.fill_socket();
    rig.send(
        Hdr {
            flags: SHUTDOWN_RCV | SHUTDOWN_SEND,
            ..Hdr::from_guest(OP_SHUTDOWN)
        },
        &[],
    );
    assert!(
        !ops(&rig.received()).contains(&OP_RST),
        "no reset while bytes are held"
    );
    assert!(!rig.relay.by_key.is_empty());
    host.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        match host.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => rig.socket_event(EventSet::OUT),
            Err(e) => panic!("{e}"),
        }
    }
    assert!(
        got == pattern(0, sent),
        "every byte, in order, then the end"
    );
    assert_eq!(ops(&rig.received()).last(), Some(&OP_RST));
    assert!(rig.relay.by_key.is_empty());
}

/// One step of a hostile guest (and of the host's end) in
/// [`a_hostile_guests_packets_never_break_the_relay`].
#[derive(Debug, Clone)]
enum Step {
    /// The guest sends a packet with these fields; `hdr_len` is the length
    /// of the header's descriptor, `claimed` the length the header says,
    /// `writable` marks the data descriptor device-writable (invalid on the
    /// transmit queue).
    Send {
        hdr: Hdr,
        type_: u16,
        hdr_len: u32,
        claimed: Option<u32>,
        data: Vec<u8>,
        writable: bool,
    },
    /// The host's end of every accepted connection writes `bytes`.
    HostWrite(Vec<u8>),
    /// The host's end of the oldest accepted connection is closed.
    HostClose,
    /// A socket event for a connection slot, as the worker's epoll might
    /// report it (also for a slot that holds nothing).
    SocketEvent { slot: u16, bits: u32 },
    /// The guest offers a receive buffer and kicks the receive queue.
    OfferRx(u32),
}

fn hostile_step() -> impl proptest::strategy::Strategy<Value = Step> {
    use proptest::prelude::*;
    // Mostly what a guest would send, so that connections live long
    // enough to be abused; every field is sometimes wild.
    let hdr = (
        prop_oneof![4 => Just(GUEST_CID), 1 => prop::sample::select(vec![HOST_CID, 7, u64::MAX])],
        prop_oneof![4 => Just(HOST_CID), 1 => prop::sample::select(vec![GUEST_CID, 0])],
        prop_oneof![4 => Just(GUEST_PORT), 1 => prop::sample::select(vec![GUEST_PORT + 1, 0, u32::MAX])],
        prop_oneof![4 => Just(PORT), 1 => Just(PORT + 1)],
        prop_oneof![
            1 => Just(OP_REQUEST),
            4 => Just(OP_RW),
            1 => prop::sample::select(vec![OP_CREDIT_UPDATE, OP_CREDIT_REQUEST, OP_SHUTDOWN]),
            1 => prop::sample::select(vec![0, OP_RESPONSE, OP_RST, 8, u16::MAX]),
        ],
        prop_oneof![3 => Just(0u32), 1 => any::<u32>()],
        prop_oneof![3 => Just(64 * 1024), 1 => any::<u32>()],
        prop_oneof![3 => Just(0), 1 => any::<u32>()],
    )
        .prop_map(
            |(src_cid, dst_cid, src_port, dst_port, op, flags, buf_alloc, fwd_cnt)| Hdr {
                src_cid,
                dst_cid,
                src_port,
                dst_port,
                len: 0,
                op,
                flags,
                buf_alloc,
                fwd_cnt,
            },
        );
    prop_oneof![
        6 => (
            hdr,
            prop_oneof![6 => Just(TYPE_STREAM), 1 => prop::sample::select(vec![2, 0])],
            prop_oneof![6 => Just(PKT_HEADER_SIZE as u32), 1 => prop::sample::select(vec![0, 20, 100])],
            prop::option::weighted(0.1, 0u32..70_000),
            prop_oneof![
                3 => prop::collection::vec(any::<u8>(), 0..300),
                // Up to a packet's most: enough of them fill the host's
                // socket and then the relay's credit.
                1 => (30_000usize..=MAX_PKT as usize, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
            ],
            prop::bool::weighted(0.05),
        )
            .prop_map(|(hdr, type_, hdr_len, claimed, data, writable)| Step::Send {
                hdr,
                type_,
                hdr_len,
                claimed,
                data,
                writable,
            }),
        2 => prop::collection::vec(any::<u8>(), 1..5_000).prop_map(Step::HostWrite),
        1 => Just(Step::HostClose),
        1 => (0u16..4, any::<u32>()).prop_map(|(slot, bits)| Step::SocketEvent { slot, bits }),
        2 => (0u32..5_000).prop_map(Step::OfferRx),
    ]
}

impl Rig {
    /// The guest puts a packet on the transmit queue as `step` says and
    /// kicks it; the relay uses it whatever it holds.
    fn send_raw(&mut self, step: &Step) {
        let Step::Send {
            hdr,
            type_,
            hdr_len,
            claimed,
            data,
            writable,
        } = step
        else {
            unreachable!()
        };
        let mut bytes = Hdr {
            len: claimed.unwrap_or(data.len() as u32),
            ..*hdr
        }
        .bytes();
        bytes[28..30].copy_from_slice(&type_.to_le_bytes());
        self.put_tx(&bytes, *hdr_len, data, *writable);
    }

    /// The connection in `slot` got `events`, as the worker's epoll might
    /// say (also for a slot that holds nothing).
    fn socket_event_at(&mut self, slot: usize, events: EventSet) {
        let id = FIRST_CONN + slot as u16;
        self.relay
            .handle_event(id, events, &self.vrings, 0)
            .unwrap();
    }

    /// Takes whatever the guest was sent and offers a fresh buffer for
    /// each; checks that every packet is a well-formed stream packet from
    /// the host to the guest (a buffer given back unused has length 0).
    fn drain_checked(&mut self) {
        let used = self.rx.used(&self.mem.memory());
        for &(head, len) in &used {
            let (h, _) = self.rx_bufs.remove(&head).expect("an offered buffer");
            if len != 0 {
                let mut hb = [0u8; PKT_HEADER_SIZE];
                self.mem
                    .memory()
                    .read_slice(&mut hb, GuestAddress(h))
                    .unwrap();
                let hdr = Hdr::parse(&hb);
                assert_eq!(len as usize, PKT_HEADER_SIZE + hdr.len as usize);
                assert_eq!((hdr.src_cid, hdr.dst_cid), (HOST_CID, GUEST_CID));
            }
            self.offer_rx(4096);
        }
        if !used.is_empty() {
            self.relay
                .handle_event(RX, EventSet::IN, &self.vrings, 0)
                .unwrap();
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]

    /// A guest is not trusted: whatever it puts on its queues (wrong CIDs
    /// and types, unknown operations, headers that lie about their length,
    /// short or writable descriptors, absurd credit), interleaved with the
    /// host's end writing and closing and spurious socket events, the relay
    /// neither panics nor fails an event, uses every packet, sends the guest
    /// only well-formed packets, connects only for a stream `REQUEST` from
    /// the guest's own CID to the host, and holds no more of the guest's
    /// bytes than its credit.
    #[test]
    fn a_hostile_guests_packets_never_break_the_relay(
        steps in proptest::collection::vec(hostile_step(), 1..60)
    ) {
        let mut rig = Rig::new();
        rig.listener.set_nonblocking(true).unwrap();
        let mut hosts: Vec<UnixStream> = Vec::new();
        let mut requests = 0usize;
        for step in &steps {
            match step {
                Step::Send { hdr, type_, .. } => {
                    if hdr.op == OP_REQUEST
                        && *type_ == TYPE_STREAM
                        && hdr.src_cid == GUEST_CID
                        && hdr.dst_cid == HOST_CID
                    {
                        requests += 1;
                    }
                    rig.send_raw(step);
                }
                Step::HostWrite(bytes) => {
                    for h in &mut hosts {
                        h.set_nonblocking(true).unwrap();
                        let _ = h.write(bytes);
                    }
                    for slot in 0..rig.relay.conns.len() {
                        rig.socket_event_at(slot, EventSet::IN);
                    }
                }
                Step::HostClose => {
                    if !hosts.is_empty() {
                        drop(hosts.remove(0));
                    }
                    for slot in 0..rig.relay.conns.len() {
                        rig.socket_event_at(slot, EventSet::IN | EventSet::HANG_UP);
                    }
                }
                Step::SocketEvent { slot, bits } => {
                    rig.socket_event_at(usize::from(*slot), EventSet::from_bits_truncate(*bits));
                }
                Step::OfferRx(len) => {
                    // The ring holds 16 descriptors: at most 8 buffers.
                    if rig.rx_bufs.len() < 8 {
                        rig.offer_rx(*len);
                    }
                    rig.relay.handle_event(RX, EventSet::IN, &rig.vrings, 0).unwrap();
                }
            }
            while let Ok((h, _)) = rig.listener.accept() {
                hosts.push(h);
            }
            rig.drain_checked();
            let live: Vec<&Conn> = rig.relay.conns.iter().flatten().collect();
            proptest::prop_assert!(live.len() <= requests, "{} connections from {requests} requests", live.len());
            proptest::prop_assert_eq!(live.len(), rig.relay.by_key.len());
            for c in live {
                proptest::prop_assert!(c.pending.len() <= BUF_ALLOC as usize, "{} bytes held", c.pending.len());
                proptest::prop_assert_eq!(c.key.host_port, PORT, "only the listening port connects");
            }
        }
    }
}
