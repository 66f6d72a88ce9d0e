//! The device: virtio-vsock's three queues and the Unix sockets of its
//! connections, all served by vhost-user-backend's one worker thread. The
//! Unix sockets are registered in that thread's own epoll, so a packet
//! goes from a socket to the guest's ring (and back) in the thread that
//! woke for it, with no hand-off between threads.
//!
//! Only guest-initiated stream connections to the host (CID 2) exist: a
//! `REQUEST` to port P connects to the Unix socket `<uds-path>_<P>`
//! (cloud-hypervisor's and Firecracker's hybrid vsock scheme).

use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackendMut, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::{QueueOwnedT, QueueT};
use virtio_vsock::packet::{PKT_HEADER_SIZE, VsockPacket};
use vm_memory::{
    GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap, ReadVolatile, VolatileMemoryError,
    WriteVolatile,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EFD_NONBLOCK, EventFd};

use crate::credit::Credit;
use crate::unix;

/// The host's CID.
pub(crate) const HOST_CID: u64 = 2;
/// The queues: receive (to the guest), transmit (from it), events.
const RX: u16 = 0;
const TX: u16 = 1;
const EVENTS: u16 = 2;
const QUEUES: usize = 3;
/// Epoll data of connection slot `i` is `FIRST_CONN + i` (vhost-user-backend
/// keeps `0..=QUEUES` for the queues and its exit event, and hands the
/// data on as a u16).
const FIRST_CONN: u16 = QUEUES as u16 + 1;
/// At most this many connections at once; more are refused.
const MAX_CONNS: usize = 256;
/// At most this many control packets wait for the guest's receive buffers;
/// past it the transmit queue is left alone until they are delivered.
const MAX_OUTBOX: usize = 256;
/// The largest payload of a packet from the guest.
const MAX_PKT: u32 = 64 * 1024;
const QUEUE_SIZE: usize = 256;

/// virtio-vsock's stream type and operations.
const TYPE_STREAM: u16 = 1;
pub(crate) const OP_REQUEST: u16 = 1;
pub(crate) const OP_RESPONSE: u16 = 2;
pub(crate) const OP_RST: u16 = 3;
pub(crate) const OP_SHUTDOWN: u16 = 4;
pub(crate) const OP_RW: u16 = 5;
pub(crate) const OP_CREDIT_UPDATE: u16 = 6;
pub(crate) const OP_CREDIT_REQUEST: u16 = 7;
/// `SHUTDOWN` flags: the sender will receive / send no more.
pub(crate) const SHUTDOWN_RCV: u32 = 1;
pub(crate) const SHUTDOWN_SEND: u32 = 2;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;

/// A connection's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    pub(crate) guest_port: u32,
    pub(crate) host_port: u32,
}

/// A packet for the guest without data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Control {
    pub(crate) key: Key,
    pub(crate) op: u16,
    pub(crate) flags: u32,
}

/// One connection: the guest's end is `key`, the host's a Unix socket.
#[derive(Debug)]
struct Conn {
    key: Key,
    stream: UnixStream,
    credit: Credit,
    /// Guest bytes the Unix socket has not taken yet (within our credit).
    pending: Vec<u8>,
    /// The socket may have bytes for the guest (epoll said so, and no
    /// read since came back short).
    readable: bool,
    /// The host's end sent all it will (a read returned 0), or the guest
    /// will receive no more: nothing more is read.
    read_done: bool,
    /// The guest will send no more: the socket's write side is shut once
    /// `pending` is out.
    write_done: bool,
    /// The guest closed: once `pending` is out, the connection ends and
    /// the guest is sent `RST`.
    closing: bool,
    /// The socket reported a hang-up: it is out of the epoll set.
    hung_up: bool,
    /// The events registered for the socket in the epoll set.
    interest: u32,
}

impl Conn {
    fn wants_read(&self) -> bool {
        self.readable && !self.read_done && self.credit.peer_free() > 0
    }

    /// The events to wait for on the socket.
    fn interest(&self, rx_starved: bool) -> u32 {
        let mut events = 0;
        if !self.readable && !self.read_done && !rx_starved && self.credit.peer_free() > 0 {
            events |= libc::EPOLLIN as u32;
        }
        if !self.pending.is_empty() {
            events |= libc::EPOLLOUT as u32;
        }
        events
    }
}

/// What happened to the socket of a connection.
enum Io {
    Fine,
    /// The connection is broken: it ends and the guest gets `RST`.
    Broken,
}

#[derive(Debug)]
pub(crate) struct Relay {
    guest_cid: u64,
    /// Connections to port P go to `<uds_path>_<P>`.
    uds_path: PathBuf,
    mem: Option<Mem>,
    event_idx: bool,
    /// The epoll set of vhost-user-backend's worker thread.
    epoll: Option<RawFd>,
    exit: EventFd,
    conns: Vec<Option<Conn>>,
    by_key: HashMap<Key, usize>,
    /// Control packets for the guest, in order.
    outbox: VecDeque<Control>,
    /// The guest's receive queue had no buffer when we had a packet for it.
    rx_starved: bool,
    /// The transmit queue was left with packets in it (`outbox` full).
    tx_blocked: bool,
}

impl Relay {
    pub(crate) fn new(guest_cid: u64, uds_path: PathBuf) -> io::Result<Relay> {
        Ok(Relay {
            guest_cid,
            uds_path,
            mem: None,
            event_idx: false,
            epoll: None,
            exit: EventFd::new(EFD_NONBLOCK)?,
            conns: Vec::new(),
            by_key: HashMap::new(),
            outbox: VecDeque::new(),
            rx_starved: false,
            tx_blocked: false,
        })
    }

    /// The worker thread's epoll set, where connections' sockets go.
    pub(crate) fn set_epoll(&mut self, fd: RawFd) {
        self.epoll = Some(fd);
    }

    fn control(&mut self, key: Key, op: u16, flags: u32) {
        self.outbox.push_back(Control { key, op, flags });
    }

    /// One packet from the guest.
    fn on_packet<B: vm_memory::bitmap::BitmapSlice>(&mut self, pkt: &VsockPacket<'_, B>) {
        if pkt.src_cid() != self.guest_cid || pkt.dst_cid() != HOST_CID {
            // Not from this guest or not for the host: nowhere to answer.
            return;
        }
        let key = Key {
            guest_port: pkt.src_port(),
            host_port: pkt.dst_port(),
        };
        let op = pkt.op();
        if pkt.type_() != TYPE_STREAM {
            if op != OP_RST {
                self.control(key, OP_RST, 0);
            }
            return;
        }
        let Some(&slot) = self.by_key.get(&key) else {
            match op {
                OP_REQUEST => self.connect(key, pkt.buf_alloc(), pkt.fwd_cnt()),
                OP_RST => {}
                _ => self.control(key, OP_RST, 0),
            }
            return;
        };
        let conn = self.conns[slot].as_mut().expect("by_key names live slots");
        conn.credit.peer_said(pkt.buf_alloc(), pkt.fwd_cnt());
        let io = match op {
            OP_RW => match pkt.data_slice() {
                Some(data) => Self::write(conn, data),
                None => Io::Fine,
            },
            OP_CREDIT_UPDATE => Io::Fine,
            OP_CREDIT_REQUEST => {
                conn.credit.update_queued();
                self.control(key, OP_CREDIT_UPDATE, 0);
                Io::Fine
            }
            OP_SHUTDOWN => {
                let flags = pkt.flags();
                if flags & SHUTDOWN_RCV != 0 {
                    conn.read_done = true;
                }
                if flags & SHUTDOWN_SEND != 0 {
                    conn.write_done = true;
                }
                if flags & (SHUTDOWN_RCV | SHUTDOWN_SEND) == SHUTDOWN_RCV | SHUTDOWN_SEND {
                    conn.closing = true;
                }
                Self::flush(conn)
            }
            OP_RST => {
                self.drop_conn(slot);
                return;
            }
            // A second REQUEST, a RESPONSE (we never connect to the
            // guest) or an unknown operation.
            _ => Io::Broken,
        };
        self.after_io(slot, io);
    }

    /// Ends connection `slot` after `io` if it broke or is done; else
    /// tells the guest our count if it is due.
    fn after_io(&mut self, slot: usize, io: Io) {
        let conn = self.conns[slot].as_mut().expect("a live slot");
        let key = conn.key;
        match io {
            Io::Broken => {
                self.drop_conn(slot);
                self.control(key, OP_RST, 0);
            }
            Io::Fine if conn.closing && conn.pending.is_empty() => {
                self.drop_conn(slot);
                self.control(key, OP_RST, 0);
            }
            Io::Fine => {
                if conn.credit.should_tell() {
                    self.control(key, OP_CREDIT_UPDATE, 0);
                }
            }
        }
    }

    /// A guest's `REQUEST`: connects to the host's socket for the port.
    fn connect(&mut self, key: Key, buf_alloc: u32, fwd_cnt: u32) {
        let path = unix::port_path(&self.uds_path, key.host_port);
        let slot = match self.conns.iter().position(Option::is_none) {
            Some(slot) => slot,
            None if self.conns.len() < MAX_CONNS => {
                self.conns.push(None);
                self.conns.len() - 1
            }
            None => {
                self.control(key, OP_RST, 0);
                return;
            }
        };
        let Ok(stream) = unix::connect_nonblocking(&path) else {
            self.control(key, OP_RST, 0);
            return;
        };
        let mut conn = Conn {
            key,
            stream,
            credit: Credit::default(),
            pending: Vec::new(),
            readable: false,
            read_done: false,
            write_done: false,
            closing: false,
            hung_up: false,
            interest: 0,
        };
        conn.credit.peer_said(buf_alloc, fwd_cnt);
        if self.epoll_ctl(libc::EPOLL_CTL_ADD, &conn, 0, slot).is_err() {
            self.control(key, OP_RST, 0);
            return;
        }
        self.conns[slot] = Some(conn);
        self.by_key.insert(key, slot);
        self.control(key, OP_RESPONSE, 0);
    }

    fn epoll_ctl(&self, op: i32, conn: &Conn, events: u32, slot: usize) -> io::Result<()> {
        let epoll = self
            .epoll
            .ok_or_else(|| io::Error::other("no epoll set yet"))?;
        let mut event = libc::epoll_event {
            events,
            u64: u64::from(FIRST_CONN) + slot as u64,
        };
        // SAFETY: epoll_ctl reads `event`, a valid epoll_event, for the
        // duration of the call; the fds are open.
        let r = unsafe { libc::epoll_ctl(epoll, op, conn.stream.as_raw_fd(), &mut event) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn drop_conn(&mut self, slot: usize) {
        if let Some(conn) = self.conns[slot].take() {
            if !conn.hung_up {
                let _ = self.epoll_ctl(libc::EPOLL_CTL_DEL, &conn, 0, slot);
            }
            self.by_key.remove(&conn.key);
        }
    }

    /// The guest's bytes `data` to the connection's socket, or to
    /// `pending` for as much as the socket does not take now.
    fn write<B: vm_memory::bitmap::BitmapSlice>(
        conn: &mut Conn,
        data: &vm_memory::VolatileSlice<'_, B>,
    ) -> Io {
        let len = data.len();
        if conn.write_done || conn.credit.received(len as u32).is_err() {
            return Io::Broken;
        }
        let mut written = 0;
        if conn.pending.is_empty() {
            match conn.stream.write_volatile(data) {
                Ok(n) => written = n,
                Err(VolatileMemoryError::IOError(e)) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return Io::Broken,
            }
            conn.credit.forwarded(written as u32);
        }
        if written < len {
            let start = conn.pending.len();
            conn.pending.resize(start + len - written, 0);
            let rest = data
                .subslice(written, len - written)
                .expect("within the slice");
            rest.copy_to(&mut conn.pending[start..]);
        }
        Io::Fine
    }

    /// As much of `pending` to the socket as it takes; its write side
    /// shut once all is out and the guest sends no more.
    fn flush(conn: &mut Conn) -> Io {
        while !conn.pending.is_empty() {
            match conn.stream.write(&conn.pending) {
                Ok(n) => {
                    conn.pending.drain(..n);
                    conn.credit.forwarded(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Io::Fine,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Io::Broken,
            }
        }
        if conn.write_done && !conn.closing {
            let _ = conn.stream.shutdown(std::net::Shutdown::Write);
        }
        Io::Fine
    }

    /// An epoll event on connection `slot`'s socket.
    fn on_socket(&mut self, slot: usize, events: EventSet) {
        let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        if events.contains(EventSet::ERROR) {
            self.after_io(slot, Io::Broken);
            return;
        }
        if events.intersects(EventSet::IN | EventSet::HANG_UP | EventSet::READ_HANG_UP) {
            conn.readable = true;
        }
        if events.contains(EventSet::HANG_UP) && !conn.hung_up {
            // Reported whatever the interest: out of the set, or it would
            // wake us until the connection ends. What is left to read is
            // read on `readable`; writes now fail and end it.
            let _ = self.epoll_ctl(
                libc::EPOLL_CTL_DEL,
                self.conns[slot].as_ref().unwrap(),
                0,
                slot,
            );
            let conn = self.conns[slot].as_mut().unwrap();
            conn.hung_up = true;
        }
        let conn = self.conns[slot].as_mut().unwrap();
        let io = if events.contains(EventSet::OUT) || conn.hung_up {
            let had = conn.pending.len();
            let io = Self::flush(conn);
            // The guest may be waiting for the credit a drained backlog
            // gives back (`after_io` tells it when half its credit is back).
            if had > 0 && conn.pending.is_empty() && !conn.closing {
                conn.credit.update_queued();
                let key = conn.key;
                self.control(key, OP_CREDIT_UPDATE, 0);
            }
            io
        } else {
            Io::Fine
        };
        self.after_io(slot, io);
    }

    /// The guest's transmit queue: every packet in it, until `outbox`
    /// is full.
    fn process_tx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = self.mem.clone() else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut used = false;
        self.tx_blocked = false;
        loop {
            if self.event_idx {
                vring.disable_notification().map_err(io::Error::other)?;
            }
            while self.outbox.len() < MAX_OUTBOX {
                let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem);
                let Some(mut chain) = chain else { break };
                let head = chain.head_index();
                if let Ok(pkt) = VsockPacket::from_tx_virtq_chain(&*mem, &mut chain, MAX_PKT) {
                    self.on_packet(&pkt);
                }
                vring.add_used(head, 0).map_err(io::Error::other)?;
                used = true;
            }
            if self.outbox.len() >= MAX_OUTBOX {
                self.tx_blocked = true;
                break;
            }
            if !self.event_idx || !vring.enable_notification().map_err(io::Error::other)? {
                break;
            }
        }
        if used {
            self.signal(vring)?;
        }
        Ok(())
    }

    fn signal(&self, vring: &VringRwLock) -> io::Result<()> {
        if !self.event_idx || vring.needs_notification().map_err(io::Error::other)? {
            vring.signal_used_queue()?;
        }
        Ok(())
    }

    /// What the guest is sent next: a control packet, else data of a
    /// connection that has some and may send.
    fn next_for_guest(&mut self) -> Option<Next> {
        if !self.outbox.is_empty() {
            return Some(Next::Control);
        }
        let mut request = None;
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            let Some(conn) = conn else { continue };
            if conn.wants_read() {
                return Some(Next::Data(slot));
            }
            if conn.readable && !conn.read_done && conn.credit.should_request() {
                request = Some(conn.key);
            }
        }
        let key = request?;
        self.control(key, OP_CREDIT_REQUEST, 0);
        Some(Next::Control)
    }

    /// Fills the guest's receive buffers with what it is owed.
    fn process_rx(&mut self, vring: &VringRwLock) -> io::Result<()> {
        let Some(mem) = self.mem.clone() else {
            return Ok(());
        };
        let mem = mem.memory();
        let mut used = false;
        while let Some(next) = self.next_for_guest() {
            let chain = vring.get_mut().get_queue_mut().pop_descriptor_chain(&*mem);
            let Some(mut chain) = chain else {
                if self.event_idx && vring.enable_notification().map_err(io::Error::other)? {
                    continue;
                }
                self.rx_starved = true;
                break;
            };
            let head = chain.head_index();
            let pkt = VsockPacket::from_rx_virtq_chain(&*mem, &mut chain, MAX_PKT);
            let Some(mut pkt) = pkt
                .ok()
                .filter(|p| p.data_slice().is_some_and(|d| !d.is_empty()))
            else {
                // A buffer we cannot use: given back empty.
                vring.add_used(head, 0).map_err(io::Error::other)?;
                used = true;
                continue;
            };
            let len = match next {
                Next::Control => {
                    let c = self.outbox.pop_front().expect("next_for_guest saw one");
                    let counters = self.by_key.get(&c.key).map_or((0, 0), |&slot| {
                        self.conns[slot].as_mut().unwrap().credit.tell()
                    });
                    self.header(&mut pkt, c, 0, counters);
                    Some(0)
                }
                Next::Data(slot) => self.read_into(slot, &mut pkt),
            };
            match len {
                Some(n) => {
                    vring
                        .add_used(head, (PKT_HEADER_SIZE + n) as u32)
                        .map_err(io::Error::other)?;
                    used = true;
                }
                None => vring.get_mut().get_queue_mut().go_to_previous_position(),
            }
        }
        if used {
            self.signal(vring)?;
        }
        Ok(())
    }

    /// Reads from connection `slot`'s socket into `pkt`'s buffer (not
    /// empty) and makes it the packet that says so: `RW`, `SHUTDOWN` at the
    /// end of the stream, `RST` on an error. `None`: nothing to read after
    /// all, the buffer is not used.
    fn read_into<B: vm_memory::bitmap::BitmapSlice>(
        &mut self,
        slot: usize,
        pkt: &mut VsockPacket<'_, B>,
    ) -> Option<usize> {
        let conn = self.conns[slot].as_mut().unwrap();
        let key = conn.key;
        let data = pkt.data_slice()?;
        let want = data.len().min(conn.credit.peer_free() as usize);
        let mut buf = data.subslice(0, want).ok()?;
        match conn.stream.read_volatile(&mut buf) {
            Ok(0) => {
                conn.readable = false;
                conn.read_done = true;
                let counters = conn.credit.tell();
                let c = Control {
                    key,
                    op: OP_SHUTDOWN,
                    flags: SHUTDOWN_SEND,
                };
                self.header(pkt, c, 0, counters);
                Some(0)
            }
            Ok(n) => {
                if n < want {
                    // Level-triggered: epoll says when there is more.
                    conn.readable = false;
                }
                conn.credit.sent(n as u32);
                let counters = conn.credit.tell();
                let c = Control {
                    key,
                    op: OP_RW,
                    flags: 0,
                };
                self.header(pkt, c, n as u32, counters);
                Some(n)
            }
            Err(VolatileMemoryError::IOError(e))
                if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted =>
            {
                conn.readable = false;
                None
            }
            Err(_) => {
                self.drop_conn(slot);
                let c = Control {
                    key,
                    op: OP_RST,
                    flags: 0,
                };
                self.header(pkt, c, 0, (0, 0));
                Some(0)
            }
        }
    }

    fn header<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        pkt: &mut VsockPacket<'_, B>,
        c: Control,
        len: u32,
        (buf_alloc, fwd_cnt): (u32, u32),
    ) {
        pkt.set_src_cid(HOST_CID)
            .set_dst_cid(self.guest_cid)
            .set_src_port(c.key.host_port)
            .set_dst_port(c.key.guest_port)
            .set_type(TYPE_STREAM)
            .set_op(c.op)
            .set_flags(c.flags)
            .set_len(len)
            .set_buf_alloc(buf_alloc)
            .set_fwd_cnt(fwd_cnt);
    }

    /// Each connection's socket waits for what it can act on now.
    fn sync_interest(&mut self) {
        for slot in 0..self.conns.len() {
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            let want = conn.interest(self.rx_starved);
            if conn.hung_up || want == conn.interest {
                continue;
            }
            if self
                .epoll_ctl(libc::EPOLL_CTL_MOD, conn, want, slot)
                .is_ok()
            {
                self.conns[slot].as_mut().unwrap().interest = want;
            }
        }
    }

    /// Everything that can move after an event.
    fn pump(&mut self, vrings: &[VringRwLock], tx_kicked: bool) -> io::Result<()> {
        let (rx, tx) = (&vrings[usize::from(RX)], &vrings[usize::from(TX)]);
        if tx_kicked || self.tx_blocked {
            self.process_tx(tx)?;
        }
        loop {
            self.process_rx(rx)?;
            if !self.tx_blocked || self.outbox.len() >= MAX_OUTBOX {
                break;
            }
            self.process_tx(tx)?;
        }
        self.sync_interest();
        Ok(())
    }
}

enum Next {
    Control,
    Data(usize),
}

impl VhostUserBackendMut for Relay {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        QUEUES
    }

    fn max_queue_size(&self) -> usize {
        QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        // virtio_vsock_config: the guest's CID, a le64.
        let config = self.guest_cid.to_le_bytes();
        let (offset, size) = (offset as usize, size as usize);
        match offset.checked_add(size) {
            Some(end) if end <= config.len() => config[offset..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn update_memory(&mut self, mem: Mem) -> io::Result<()> {
        self.mem = Some(mem);
        Ok(())
    }

    fn exit_event(&self, _thread: usize) -> Option<EventFd> {
        self.exit.try_clone().ok()
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        evset: EventSet,
        vrings: &[VringRwLock],
        _thread: usize,
    ) -> io::Result<()> {
        match device_event {
            RX => {
                self.rx_starved = false;
                self.pump(vrings, false)
            }
            TX => self.pump(vrings, true),
            EVENTS => Ok(()),
            id if id >= FIRST_CONN => {
                self.on_socket(usize::from(id - FIRST_CONN), evset);
                self.pump(vrings, false)
            }
            _ => Err(io::Error::other(format!("unexpected event {device_event}"))),
        }
    }
}

#[cfg(test)]
#[path = "relay_tests.rs"]
mod tests;
