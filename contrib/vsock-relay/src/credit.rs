//! virtio-vsock's flow control for one connection (virtio spec 5.10.6.3):
//! each side tells the other how much it can buffer (`buf_alloc`) and how
//! many bytes it has consumed so far (`fwd_cnt`); a sender keeps what it
//! has sent but the receiver has not consumed within `buf_alloc`.

use std::num::Wrapping;

/// What this relay buffers of a connection's guest-to-host bytes while its
/// Unix socket is full: the `buf_alloc` it tells the guest.
pub(crate) const BUF_ALLOC: u32 = 256 * 1024;

/// The counters of one connection, both directions.
#[derive(Debug, Default)]
pub(crate) struct Credit {
    /// The guest's receive buffer, as it last told us.
    peer_buf_alloc: u32,
    /// Bytes the guest has consumed of what we sent it, as it last told us.
    peer_fwd_cnt: Wrapping<u32>,
    /// Bytes we have sent the guest.
    tx_cnt: Wrapping<u32>,
    /// Bytes the guest has sent us.
    rx_cnt: Wrapping<u32>,
    /// Bytes the guest has sent us that went on to the Unix socket.
    fwd_cnt: Wrapping<u32>,
    /// `fwd_cnt` as last told to the guest.
    fwd_cnt_told: Wrapping<u32>,
    /// A credit request is out and no credit update came since.
    requested: bool,
}

/// The guest sent more than the credit it was given.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the guest sent {sent} bytes with {free} bytes of credit")]
pub(crate) struct Overrun {
    pub(crate) sent: u32,
    pub(crate) free: u32,
}

impl Credit {
    /// What the guest's header of any packet says of its buffer.
    pub(crate) fn peer_said(&mut self, buf_alloc: u32, fwd_cnt: u32) {
        self.peer_buf_alloc = buf_alloc;
        self.peer_fwd_cnt = Wrapping(fwd_cnt);
        self.requested = false;
    }

    /// How many bytes we may send the guest now.
    pub(crate) fn peer_free(&self) -> u32 {
        let in_flight = (self.tx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// `n` bytes went to the guest (at most `peer_free`).
    pub(crate) fn sent(&mut self, n: u32) {
        debug_assert!(n <= self.peer_free());
        self.tx_cnt += n;
    }

    /// The guest sent `n` bytes: an error if that is more than it may.
    pub(crate) fn received(&mut self, n: u32) -> Result<(), Overrun> {
        let free = BUF_ALLOC - (self.rx_cnt - self.fwd_cnt).0.min(BUF_ALLOC);
        if n > free {
            return Err(Overrun { sent: n, free });
        }
        self.rx_cnt += n;
        Ok(())
    }

    /// `n` of the guest's bytes went on to the Unix socket.
    pub(crate) fn forwarded(&mut self, n: u32) {
        debug_assert!(n <= (self.rx_cnt - self.fwd_cnt).0);
        self.fwd_cnt += n;
    }

    /// Whether the guest should be told our `fwd_cnt` without waiting for
    /// a packet to carry it: it has used half of its credit since we last
    /// told it (each packet we send tells it anyway). Yes once: the update
    /// it asks for counts as told.
    pub(crate) fn should_tell(&mut self) -> bool {
        if (self.fwd_cnt - self.fwd_cnt_told).0 < BUF_ALLOC / 2 {
            return false;
        }
        self.update_queued();
        true
    }

    /// A credit update for the guest is queued: what is forwarded until
    /// it is sent goes with it.
    pub(crate) fn update_queued(&mut self) {
        self.fwd_cnt_told = self.fwd_cnt;
    }

    /// Our counters for a packet's header, as `(buf_alloc, fwd_cnt)`; the
    /// guest knows them from now on.
    pub(crate) fn tell(&mut self) -> (u32, u32) {
        self.fwd_cnt_told = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt.0)
    }

    /// Whether to ask the guest for its counters: we have bytes for it but
    /// no credit, and have not asked since it last told us.
    pub(crate) fn should_request(&mut self) -> bool {
        if self.peer_free() > 0 || self.requested {
            return false;
        }
        self.requested = true;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_is_sent_no_more_than_its_buffer_holds_until_it_consumes() {
        let mut c = Credit::default();
        assert_eq!(c.peer_free(), 0, "nothing before the guest says its buffer");
        c.peer_said(1000, 0);
        c.sent(600);
        assert_eq!(c.peer_free(), 400);
        c.sent(400);
        assert_eq!(c.peer_free(), 0);
        c.peer_said(1000, 700);
        assert_eq!(c.peer_free(), 700);
    }

    #[test]
    fn credit_counters_wrap_around() {
        let mut c = Credit {
            tx_cnt: Wrapping(u32::MAX - 10),
            ..Credit::default()
        };
        c.peer_said(100, u32::MAX - 10);
        c.sent(50);
        assert_eq!(c.tx_cnt.0, 39);
        assert_eq!(c.peer_free(), 50);
        c.peer_said(100, 39);
        assert_eq!(c.peer_free(), 100);
    }

    #[test]
    fn a_guest_that_shrinks_its_buffer_below_what_is_in_flight_gets_nothing() {
        let mut c = Credit::default();
        c.peer_said(1000, 0);
        c.sent(800);
        c.peer_said(500, 0);
        assert_eq!(c.peer_free(), 0);
    }

    #[test]
    fn a_guest_sending_past_its_credit_is_an_overrun() {
        let mut c = Credit::default();
        c.received(BUF_ALLOC - 10).unwrap();
        assert_eq!(c.received(11), Err(Overrun { sent: 11, free: 10 }));
        c.forwarded(100);
        c.received(110).unwrap();
        assert_eq!(c.received(1), Err(Overrun { sent: 1, free: 0 }));
    }

    #[test]
    fn the_guest_is_told_our_count_once_half_its_credit_is_used() {
        let mut c = Credit::default();
        c.received(BUF_ALLOC / 2 - 1).unwrap();
        c.forwarded(BUF_ALLOC / 2 - 1);
        assert!(!c.should_tell());
        c.received(1).unwrap();
        c.forwarded(1);
        assert!(c.should_tell());
        assert!(!c.should_tell(), "one update asked for");
        assert_eq!(c.tell(), (BUF_ALLOC, BUF_ALLOC / 2));
        assert!(!c.should_tell());
    }

    #[test]
    fn credit_is_requested_once_until_the_guest_answers() {
        let mut c = Credit::default();
        c.peer_said(10, 0);
        assert!(!c.should_request(), "credit left");
        c.sent(10);
        assert!(c.should_request());
        assert!(!c.should_request(), "asked already");
        c.peer_said(10, 0);
        assert!(c.should_request(), "it answered without giving credit");
    }
}
