//! Who a peer counts as, and how the daemon shares out what its peers can
//! make it hold: connection slots, and reply bytes (frames built and not yet
//! taken by the kernel, the memory a peer that does not read pins).
//!
//! Every peer draws from the share of its [`Tenant`]. Root and the admin
//! group may use a whole [`Ledger`], including a reserve that no one else
//! may touch, so they always get in. Other users share the rest by uid:
//! each holds at most [`Share::per_user`], and only while it holds less
//! than half of what remains free for users (its fair share), so however
//! many users there are, the ones holding the most cannot take the last
//! free units from the others. (`docs/security.md` gives the figures.)
//!
//! A connection slot is claimed without waiting ([`Ledger::try_claim`]: over
//! the share, the connection is refused with `Busy`); reply bytes are claimed
//! before a frame is built and may wait for others to be released
//! ([`Ledger::claim`]). A [`Claim`] gives its units back when dropped.
//!
//! A UI VM is a tenant of its own ([`Tenant::Vm`]) in ledgers of its own —
//! its connections, its calls in their own task, its reply bytes — made
//! for each VM's listener: it draws nothing from the host's ledgers, so a
//! hostile VM cannot take what host clients or other VMs need.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::peer::Peer;

/// Whose share a peer draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tenant {
    /// Root and members of the admin group: the whole ledger, reserve included.
    Admin,
    /// Any other local user, by uid: a fair share of the rest.
    User(u32),
    /// A UI VM, in the ledgers of that VM alone: the whole of them.
    Vm,
}

impl Tenant {
    /// The tenant of `peer`, `admin_gid` being the admin group.
    pub fn of(peer: &Peer, admin_gid: Option<u32>) -> Tenant {
        if peer.is_vm() {
            Tenant::Vm
        } else if peer.is_root_or_in(admin_gid) {
            Tenant::Admin
        } else {
            Tenant::User(peer.uid)
        }
    }
}

/// How one resource is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// Units in all.
    pub total: u64,
    /// Units only root and the admin group (`Tenant::Admin`) may use:
    /// users together hold at most `total - reserve`.
    pub reserve: u64,
    /// The most one user may hold.
    pub per_user: u64,
}

impl Share {
    /// Units users may hold together.
    pub fn users(&self) -> u64 {
        self.total.saturating_sub(self.reserve)
    }
}

#[derive(Debug, Default)]
struct State {
    used: u64,
    /// The most held at once since [`Ledger::take_peak`].
    peak: u64,
    users: u64,
    by_uid: HashMap<u32, u64>,
}

/// One shared resource: what is held, by whom, and who waits.
#[derive(Debug)]
pub struct Ledger {
    share: Share,
    state: Mutex<State>,
    freed: Notify,
    waiters: AtomicUsize,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(share: Share) -> Arc<Ledger> {
        Arc::new(Ledger {
            share,
            state: Mutex::new(State::default()),
            freed: Notify::new(),
            waiters: AtomicUsize::new(0),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The share.
    pub fn share(&self) -> Share {
        self.share
    }

    /// Units held now, by everyone.
    pub fn used(&self) -> u64 {
        self.state().used
    }

    /// The most units held at once since the last call (or since the
    /// ledger was made); starts over from what is held now.
    pub fn take_peak(&self) -> u64 {
        let mut s = self.state();
        let peak = s.peak;
        s.peak = s.used;
        peak
    }

    /// Units held now by user `uid`.
    pub fn held_by(&self, uid: u32) -> u64 {
        self.state().by_uid.get(&uid).copied().unwrap_or(0)
    }

    /// Claims `n` units for `tenant` now, or `None` over its share.
    pub fn try_claim(self: &Arc<Self>, tenant: Tenant, n: u64) -> Option<Claim> {
        self.try_claim_as(tenant, n, Fairness::Share)
    }

    /// [`Ledger::claim_evicted`], without waiting.
    pub fn try_claim_evicted(self: &Arc<Self>, tenant: Tenant, n: u64) -> Option<Claim> {
        self.try_claim_as(tenant, n, Fairness::Evicted)
    }

    fn try_claim_as(self: &Arc<Self>, tenant: Tenant, n: u64, fair: Fairness) -> Option<Claim> {
        let mut s = self.state();
        if !self.fits(&s, tenant, n, fair) {
            return None;
        }
        s.used += n;
        s.peak = s.peak.max(s.used);
        if let Tenant::User(uid) = tenant {
            s.users += n;
            *s.by_uid.entry(uid).or_insert(0) += n;
        }
        Some(Claim {
            ledger: self.clone(),
            tenant,
            amount: n,
        })
    }

    /// Claims `n` units for `tenant`, waiting for others to give units back
    /// for as long as it takes (bound the wait by dropping the future). A
    /// claim larger than the tenant could ever hold waits forever: callers
    /// keep claims within [`Share::per_user`].
    pub async fn claim(self: &Arc<Self>, tenant: Tenant, n: u64) -> Claim {
        self.claim_as(tenant, n, Fairness::Share).await
    }

    /// Claims `n` units given back for `tenant` by an eviction
    /// ([`Ledger::victim`]): within its cap and the users' part, but not
    /// its fair share of what is free (what is free is the evicted units).
    /// Waits as [`Ledger::claim`] does.
    pub async fn claim_evicted(self: &Arc<Self>, tenant: Tenant, n: u64) -> Claim {
        self.claim_as(tenant, n, Fairness::Evicted).await
    }

    async fn claim_as(self: &Arc<Self>, tenant: Tenant, n: u64, fair: Fairness) -> Claim {
        if let Some(c) = self.try_claim_as(tenant, n, fair) {
            return c;
        }
        // Counted before the check below, so that a release in between
        // sees a waiter and notifies.
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiters);
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(c) = self.try_claim_as(tenant, n, fair) {
                return c;
            }
            freed.await;
        }
    }

    /// For a user refused `n` units because the users' part is full: the
    /// user to take them from, if any — the one holding the most (the
    /// lowest uid among equals), when it
    /// holds at least two more than the refused user, and the refused user
    /// is under its own cap. Taking from it then never leaves it with less
    /// than the taker, so evictions only ever even holdings out
    /// ([`super::evict`]).
    pub fn victim(&self, tenant: Tenant, n: u64) -> Option<u32> {
        let Tenant::User(uid) = tenant else {
            return None;
        };
        let s = self.state();
        let mine = s.by_uid.get(&uid).copied().unwrap_or(0);
        if mine + n > self.share.per_user {
            return None;
        }
        // Only when the users' part is full: while units are free, the fair
        // share keeps them for users holding less.
        let free = self
            .share
            .users()
            .saturating_sub(s.users)
            .min(self.share.total - s.used);
        if free >= n {
            return None;
        }
        let (victim, held) = s
            .by_uid
            .iter()
            .filter(|(u, _)| **u != uid)
            .max_by_key(|(u, held)| (**held, std::cmp::Reverse(**u)))?;
        (*held >= mine + 2).then_some(*victim)
    }

    fn fits(&self, s: &State, tenant: Tenant, n: u64, fair: Fairness) -> bool {
        if s.used + n > self.share.total {
            return false;
        }
        match tenant {
            Tenant::Admin | Tenant::Vm => true,
            Tenant::User(uid) => {
                // Free for users: their part, less what they hold, and no
                // more than the total leaves (root may hold more than its
                // reserve).
                let free = self
                    .share
                    .users()
                    .saturating_sub(s.users)
                    .min(self.share.total - s.used);
                let mine = s.by_uid.get(&uid).copied().unwrap_or(0);
                // The fair share: what a user holds, plus what it asks for,
                // stays within what remains free for the others.
                let within = match fair {
                    Fairness::Share => 2 * mine + n <= free,
                    Fairness::Evicted => n <= free,
                };
                mine + n <= self.share.per_user && within
            }
        }
    }

    fn release(&self, tenant: Tenant, n: u64) {
        if n == 0 {
            return;
        }
        {
            let mut s = self.state();
            s.used -= n;
            if let Tenant::User(uid) = tenant {
                s.users -= n;
                if let Some(mine) = s.by_uid.get_mut(&uid) {
                    *mine -= n;
                    if *mine == 0 {
                        s.by_uid.remove(&uid);
                    }
                }
            }
        }
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }
}

/// Whether a user's claim must stay within its fair share of what is free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fairness {
    /// It must.
    Share,
    /// It takes what an eviction gave back for it.
    Evicted,
}

/// Uncounts a waiter when its wait ends (claimed, or the future dropped).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Units held for a tenant; given back when dropped.
#[derive(Debug)]
pub struct Claim {
    ledger: Arc<Ledger>,
    tenant: Tenant,
    amount: u64,
}

impl Claim {
    /// Units held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The tenant holding them.
    pub fn tenant(&self) -> Tenant {
        self.tenant
    }

    /// Gives back all but `to` units (no-op if it holds no more).
    pub fn shrink(&mut self, to: u64) {
        if to < self.amount {
            self.ledger.release(self.tenant, self.amount - to);
            self.amount = to;
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.ledger.release(self.tenant, self.amount);
    }
}

#[cfg(test)]
mod tests;
