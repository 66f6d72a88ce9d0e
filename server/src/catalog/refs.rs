//! Who refers to a name: the catalog's provider references, indexed by
//! what they may mean, so that resolving only some names again
//! ([`super::Draft`]) finds every name whose resolution depends on them
//! without reading the whole catalog.

use std::collections::{BTreeSet, HashMap};

use vm_catalog_protocol::{SourceLabel, VmName};

use super::Names;
use super::providers::target_name;
use super::resolve::Raw;

/// For each name a provider reference may depend on, the catalog names of
/// the definitions whose references do.
///
/// A reference `r` depends on the definitions of the catalog name it means
/// (`r` itself, or its qualified reading's), and, when nothing answers to
/// it, on the definitions whose directory is named `r` (the hint of a
/// missing provider): it is indexed under both.
#[derive(Debug, Clone, Default)]
pub struct Refs {
    by_key: HashMap<String, BTreeSet<VmName>>,
}

impl Refs {
    /// The references of `raws`, under the source labels `has_label` knows
    /// and the naming `names`.
    pub(super) fn of(raws: &[Raw], has_label: impl Fn(&SourceLabel) -> bool, names: Names) -> Refs {
        let mut refs = Refs::default();
        for raw in raws {
            refs.add(raw, &has_label, names);
        }
        refs
    }

    /// The keys a definition's references are indexed under.
    fn keys<'a>(
        raw: &'a Raw,
        has_label: &'a impl Fn(&SourceLabel) -> bool,
        names: Names,
    ) -> impl Iterator<Item = String> + 'a {
        raw.def.providers.iter().flat_map(move |p| {
            let r = p.provider.name.as_str();
            let target = target_name(r, has_label, names);
            let plain = (target != r).then(|| r.to_owned());
            std::iter::once(target).chain(plain)
        })
    }

    /// Indexes the references of `raw`.
    pub(super) fn add(
        &mut self,
        raw: &Raw,
        has_label: &impl Fn(&SourceLabel) -> bool,
        names: Names,
    ) {
        for k in Refs::keys(raw, has_label, names) {
            self.by_key.entry(k).or_default().insert(raw.name.clone());
        }
    }

    /// Forgets the references of `raw` (and of any definition of the same
    /// catalog name that makes the same: the caller adds back those that
    /// stay).
    pub(super) fn remove(
        &mut self,
        raw: &Raw,
        has_label: &impl Fn(&SourceLabel) -> bool,
        names: Names,
    ) {
        for k in Refs::keys(raw, has_label, names) {
            if let Some(set) = self.by_key.get_mut(&k) {
                set.remove(&raw.name);
                if set.is_empty() {
                    self.by_key.remove(&k);
                }
            }
        }
    }

    /// The catalog names of the definitions whose references depend on
    /// `key` (a catalog name, or a directory's name).
    pub(super) fn dependants(&self, key: &str) -> impl Iterator<Item = &VmName> + '_ {
        self.by_key.get(key).into_iter().flatten()
    }
}
