//! The shares: the reserve, the per-user cap, the fair share, waiting.

use std::time::Duration;

use super::*;

/// The default connection share: 256 in all, 32 reserved, 32 per user.
fn table() -> Arc<Ledger> {
    Ledger::new(Share {
        total: 256,
        reserve: 32,
        per_user: 32,
    })
}

/// Each user connects until refused, one after the other (the order that
/// lets the first ones take the most).
fn fill_one_by_one(l: &Arc<Ledger>, users: u32) -> Vec<Claim> {
    let mut held = Vec::new();
    for uid in 1000..1000 + users {
        while let Some(c) = l.try_claim(Tenant::User(uid), 1) {
            held.push(c);
        }
    }
    held
}

/// Regression: 8 uids with 32 idle connections each
/// filled the table (256), and root's `status` got `busy: too many
/// connections`.
#[test]
fn eight_users_of_32_connections_cannot_fill_the_table_or_lock_root_out() {
    let l = table();
    let mut held = fill_one_by_one(&l, 8);
    // Round robin instead: the same, or better for the others.
    let rr = table();
    let mut rr_held = Vec::new();
    for _ in 0..32 {
        for uid in 1000..1008 {
            rr_held.extend(rr.try_claim(Tenant::User(uid), 1));
        }
    }
    for (l, held) in [(&l, &held), (&rr, &rr_held)] {
        assert!(held.len() < 224, "users filled their part: {}", held.len());
        // A ninth user still gets in, and so does root, 32 times over.
        assert!(l.try_claim(Tenant::User(2000), 1).is_some());
        let root: Vec<_> = (0..32)
            .map(|_| l.try_claim(Tenant::Admin, 1).expect("root gets in"))
            .collect();
        assert_eq!(root.len(), 32);
    }
    assert_eq!(held.len(), 206, "one by one: 5 x 32, then 22, 14, 10");
    assert_eq!(rr_held.len(), 180, "round robin: 22 or 23 each");
    held.clear();
    assert_eq!(l.used(), 0, "every slot given back");
}

/// The figure `docs/security.md` gives: with the default limits, users
/// connecting one after the other as much as the fair share lets them need
/// 15 uids to take every user slot; root's 32 stay free whatever they do.
#[test]
fn it_takes_fifteen_users_to_fill_the_users_part_and_the_reserve_stays() {
    let l = table();
    let held = fill_one_by_one(&l, 14);
    assert!(held.len() < 224, "14 users: {}", held.len());
    let l = table();
    let held = fill_one_by_one(&l, 15);
    assert_eq!(held.len(), 224);
    assert!(l.try_claim(Tenant::User(5000), 1).is_none());
    let _root: Vec<_> = (0..32)
        .map(|_| l.try_claim(Tenant::Admin, 1).expect("reserved for root"))
        .collect();
    assert!(l.try_claim(Tenant::Admin, 1).is_none(), "256 in all");
}

#[test]
fn one_user_holds_at_most_its_cap_and_admins_are_bounded_by_the_total_only() {
    let l = Ledger::new(Share {
        total: 100,
        reserve: 10,
        per_user: 5,
    });
    let mine: Vec<_> = (0..10)
        .filter_map(|_| l.try_claim(Tenant::User(7), 1))
        .collect();
    assert_eq!(mine.len(), 5);
    assert_eq!(l.held_by(7), 5);
    let root: Vec<_> = (0..200)
        .filter_map(|_| l.try_claim(Tenant::Admin, 1))
        .collect();
    assert_eq!(root.len(), 95);
    drop(mine);
    assert_eq!(l.held_by(7), 0);
    // Root holds 95 of 100: a user gets its fair share of the 5 left.
    let left: Vec<_> = (0..10)
        .filter_map(|_| l.try_claim(Tenant::User(7), 1))
        .collect();
    assert_eq!(left.len(), 2);
}

#[test]
fn a_claim_shrinks_and_gives_back_the_rest() {
    let l = Ledger::new(Share {
        total: 100,
        reserve: 0,
        per_user: 100,
    });
    let mut c = l.try_claim(Tenant::User(1), 40).unwrap();
    c.shrink(10);
    assert_eq!((c.amount(), l.used(), l.held_by(1)), (10, 10, 10));
    c.shrink(20);
    assert_eq!(c.amount(), 10, "shrinking never grows");
    drop(c);
    assert_eq!(l.used(), 0);
}

// On tokio's paused clock: the waits are tokio's, so they are exact.
#[tokio::test(start_paused = true)]
async fn a_waiting_claim_is_granted_when_enough_is_given_back() {
    let l = Ledger::new(Share {
        total: 100,
        reserve: 20,
        per_user: 80,
    });
    let big = l.try_claim(Tenant::User(1), 40).unwrap();
    // User 2 may take at most what leaves the fair share: 40 free of 80.
    assert!(l.try_claim(Tenant::User(2), 41).is_none());
    let waiter = tokio::spawn({
        let l = l.clone();
        async move { l.claim(Tenant::User(2), 60).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "60 of 40 free: it waits");
    drop(big);
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("woken when user 1 gave back")
        .unwrap();
    assert_eq!((got.amount(), l.held_by(2)), (60, 60));
}

// On tokio's paused clock: the waits are tokio's, so they are exact.
#[tokio::test(start_paused = true)]
async fn a_wait_given_up_leaves_nothing_behind() {
    let l = Ledger::new(Share {
        total: 10,
        reserve: 0,
        per_user: 10,
    });
    let all = l.try_claim(Tenant::Admin, 10).unwrap();
    let waited = tokio::time::timeout(Duration::from_millis(20), l.claim(Tenant::User(3), 5)).await;
    assert!(waited.is_err());
    assert_eq!(l.waiters.load(Ordering::SeqCst), 0);
    drop(all);
    assert_eq!(l.used(), 0);
}

/// Regression: 15 uids
/// connecting one after the other held every user slot, and a sixteenth
/// was refused for as long as they stayed. Now a refused user takes a slot
/// from the user holding the most, while that one holds two more.
#[test]
fn a_sixteenth_user_is_no_longer_locked_out_by_fifteen() {
    let l = table();
    let mut held = fill_one_by_one(&l, 15);
    assert_eq!(held.len(), 224);
    let newcomer = Tenant::User(5000);
    assert!(l.try_claim(newcomer, 1).is_none());
    let victim = l.victim(newcomer, 1).expect("someone holds two more");
    assert_eq!(victim, 1000, "the one holding the most (32), lowest uid");
    // The eviction gives one of the victim's slots back; the newcomer
    // gets it.
    let at = held
        .iter()
        .position(|c| c.tenant() == Tenant::User(victim))
        .unwrap();
    held.remove(at);
    let mine = l.try_claim_evicted(newcomer, 1).expect("the freed slot");
    assert_eq!((l.held_by(victim), l.held_by(5000)), (31, 1));
    held.push(mine);
}

/// Users that take from each other only ever even out: with 40 uids
/// arriving one after the other and each taking what it can (its fair
/// share, then, once the table is full, from whoever holds two more),
/// every uid gets in, none keeps more than 7 of the 224 slots, and no
/// eviction ever leaves the victim with less than the taker.
#[test]
fn evictions_even_holdings_out_and_stop() {
    let l = table();
    let mut held: Vec<Claim> = Vec::new();
    let mut evictions = 0;
    for uid in 1000..1040 {
        let me = Tenant::User(uid);
        loop {
            if let Some(c) = l.try_claim(me, 1) {
                held.push(c);
                continue;
            }
            let Some(victim) = l.victim(me, 1) else { break };
            let before = (l.held_by(victim), l.held_by(uid));
            let at = held
                .iter()
                .position(|c| c.tenant() == Tenant::User(victim))
                .unwrap();
            held.remove(at);
            held.push(l.try_claim_evicted(me, 1).expect("the freed slot"));
            assert!(
                before.0 >= before.1 + 2,
                "the victim keeps at least what the taker gets: {before:?}"
            );
            evictions += 1;
        }
    }
    let counts: Vec<u64> = (1000..1040).map(|u| l.held_by(u)).collect();
    assert!(
        counts.iter().all(|c| *c >= 1),
        "nobody locked out: {counts:?}"
    );
    assert!(
        counts.iter().all(|c| *c <= 7),
        "the first ones gave way: {counts:?}"
    );
    assert_eq!(counts.iter().sum::<u64>(), 224);
    assert!(evictions > 0);
}

#[test]
fn no_victim_while_slots_are_free_or_among_equals() {
    let l = Ledger::new(Share {
        total: 8,
        reserve: 0,
        per_user: 4,
    });
    let mut held = fill_one_by_one(&l, 2);
    assert_eq!((l.held_by(1000), l.held_by(1001)), (3, 2));
    // Refused by its fair share while 3 are free: no eviction.
    assert!(l.try_claim(Tenant::User(1001), 1).is_none());
    assert_eq!(l.victim(Tenant::User(1001), 1), None);
    for uid in 1002..1005 {
        held.push(l.try_claim(Tenant::User(uid), 1).unwrap());
    }
    assert_eq!(l.used(), 8, "full");
    // Each newcomer takes from the biggest holder while it holds two more.
    for (uid, victim) in [(2000, 1000), (2001, 1000), (2002, 1001)] {
        let me = Tenant::User(uid);
        assert!(l.try_claim(me, 1).is_none());
        assert_eq!(l.victim(me, 1), Some(victim), "{uid}");
        let at = held
            .iter()
            .position(|c| c.tenant() == Tenant::User(victim))
            .unwrap();
        held.remove(at);
        held.push(l.try_claim_evicted(me, 1).unwrap());
    }
    assert_eq!(l.victim(Tenant::User(3000), 1), None, "all hold one: even");
    let l = Ledger::new(Share {
        total: 10,
        reserve: 0,
        per_user: 1,
    });
    let _d = l.try_claim(Tenant::User(1), 1).unwrap();
    assert_eq!(l.victim(Tenant::User(1), 1), None, "at its own cap");
    assert_eq!(l.victim(Tenant::Admin, 1), None);
    assert_eq!(l.victim(Tenant::Vm, 1), None);
}
