//! VM ids: one per definition, keyed by its source label and directory
//! name, made once and then kept (the rescan keeps them in the state dir,
//! so they survive restarts). An id is 6 ASCII letters and digits, as
//! Spectrum's `vm-import` makes them (`mktemp -d XXXXXX`): valid as a file
//! name and as an s6 instance name, and unique among the ids known.
//!
//! Pure: the ids come from a seeded generator (the daemon seeds it from the
//! kernel's randomness, tests with a constant), and persisting them is the
//! rescan's job.

use std::collections::{BTreeMap, BTreeSet};

use vm_catalog_protocol::{SourceLabel, VmId, VmName};

/// Length of the ids made here.
pub const ID_LEN: usize = 6;

const ALPHABET: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// What an id belongs to: a source's label and the definition's directory
/// name.
pub type IdKey = (SourceLabel, VmName);

/// What happened to one id since the ids were last saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdEvent {
    /// The key got this new id.
    Made(IdKey, VmId),
    /// The key's id was forgotten.
    Forgotten(IdKey),
}

/// The ids of the definitions, and how to make new ones.
#[derive(Debug, Clone)]
pub struct VmIds {
    ids: BTreeMap<IdKey, VmId>,
    taken: BTreeSet<VmId>,
    /// xorshift64* state, never 0.
    rng: u64,
    /// What was made and forgotten since [`VmIds::take_log`], in order.
    log: Vec<IdEvent>,
}

impl VmIds {
    /// No ids yet; new ones come from a generator seeded with `seed`.
    pub fn new(seed: u64) -> VmIds {
        VmIds {
            ids: BTreeMap::new(),
            taken: BTreeSet::new(),
            rng: seed | 1,
            log: Vec::new(),
        }
    }

    /// The ids in `known` (a later duplicate of a key or an id is
    /// dropped), and a generator seeded with `seed`.
    pub fn with(known: impl IntoIterator<Item = (IdKey, VmId)>, seed: u64) -> VmIds {
        let mut ids = VmIds::new(seed);
        for (key, id) in known {
            if !ids.ids.contains_key(&key) && ids.taken.insert(id.clone()) {
                ids.ids.insert(key, id);
            }
        }
        ids
    }

    /// The id of `key`, if it has one.
    pub fn get(&self, label: &SourceLabel, name: &VmName) -> Option<&VmId> {
        self.ids.get(&(label.clone(), name.clone()))
    }

    /// The id of `key`, made now if it has none.
    pub fn assign(&mut self, label: &SourceLabel, name: &VmName) -> VmId {
        let key = (label.clone(), name.clone());
        if let Some(id) = self.ids.get(&key) {
            return id.clone();
        }
        let id = loop {
            let id = self.make();
            if !self.taken.contains(&id) {
                break id;
            }
        };
        self.taken.insert(id.clone());
        self.ids.insert(key.clone(), id.clone());
        self.log.push(IdEvent::Made(key, id.clone()));
        id
    }

    /// Forgets the ids for which `keep` is false.
    pub fn retain(&mut self, mut keep: impl FnMut(&IdKey) -> bool) {
        let (taken, log) = (&mut self.taken, &mut self.log);
        self.ids.retain(|k, id| {
            let kept = keep(k);
            if !kept {
                taken.remove(id);
                log.push(IdEvent::Forgotten(k.clone()));
            }
            kept
        });
    }

    /// Every id, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&IdKey, &VmId)> + '_ {
        self.ids.iter()
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Whether ids were made or forgotten since the last call (so that they
    /// must be saved), and resets that.
    pub fn take_changed(&mut self) -> bool {
        !self.take_log().is_empty()
    }

    /// What was made and forgotten since the last call, in order (what a
    /// save must add to the last one), and resets that.
    pub fn take_log(&mut self) -> Vec<IdEvent> {
        std::mem::take(&mut self.log)
    }

    fn next(&mut self) -> u64 {
        // xorshift64* (Vigna): plenty for names that only need to differ.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn make(&mut self) -> VmId {
        let mut n = self.next();
        let mut s = String::with_capacity(ID_LEN);
        for _ in 0..ID_LEN {
            s.push(ALPHABET[(n % 62) as usize] as char);
            n /= 62;
        }
        VmId::try_from(s.as_str()).expect("letters and digits make an id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(l: &str, n: &str) -> (SourceLabel, VmName) {
        (l.parse().unwrap(), n.parse().unwrap())
    }

    #[test]
    fn ids_are_kept_unique_and_well_formed() {
        let mut ids = VmIds::new(1);
        let (l, n) = key("sys", "netvm");
        let a = ids.assign(&l, &n);
        assert_eq!(a.as_str().len(), ID_LEN);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(ids.assign(&l, &n), a, "kept");
        assert!(ids.take_changed());
        assert!(!ids.take_changed());
        let mut seen = BTreeSet::new();
        for i in 0..2000 {
            let (l, n) = key("user", &format!("vm{i}"));
            assert!(seen.insert(ids.assign(&l, &n)), "unique");
        }
        assert!(!seen.contains(&a));
    }

    #[test]
    fn known_ids_are_taken_and_forgotten_ones_freed() {
        let id: VmId = "AAAAAA".parse().unwrap();
        let mut ids = VmIds::with([(key("sys", "netvm"), id.clone())], 7);
        let (l, n) = key("sys", "netvm");
        assert_eq!(ids.get(&l, &n), Some(&id));
        assert!(!ids.take_changed(), "loading changes nothing");
        ids.retain(|k| k.0.as_str() != "sys");
        assert!(ids.is_empty());
        assert!(ids.take_changed());
        // A duplicate id in the input is dropped, not shared.
        let ids = VmIds::with(
            [(key("a", "x"), id.clone()), (key("b", "y"), id.clone())],
            7,
        );
        assert_eq!(ids.len(), 1);
    }
}
