//! What a name given anywhere refers to: the one claimant rule (DESIGN §9).
//!
//! Every place that turns a name into a definition uses [`refer`]: the
//! catalog itself ([`super::Catalog::lookup`]), the published snapshot
//! (`GetVm`, `resolve`, the UI VM listeners) and provider resolution.
//!
//! - **Claimant.** Of the definitions of one catalog name, in precedence
//!   order, the first that may claim it ([`Claims::may_claim`]: active or
//!   rejected once resolved; available before) is the VM of that name.
//!   Unavailable and shadowed definitions never claim. When none may
//!   claim (every definition's source went away), the name still refers to
//!   the first of them, which is not a claimant.
//! - **Qualified references.** A reference that reads as
//!   `<label>.<name>`, where `<label>` is a source's label, means the
//!   definition of the directory `<name>` from that source — even when a
//!   catalog name happens to be spelt the same (a user directory cannot
//!   impersonate `sys.netvm`: see [`super::merge`]'s impostor rule). Of the
//!   ways a reference can be split at a `.`, the leftmost whose label
//!   exists is used.

use std::ops::Range;

use vm_catalog_protocol::{SourceLabel, VmEntry, VmName, VmState};

use super::{Candidate, Names};

/// A definition as the claimant rule sees it.
pub trait Claims {
    /// Its catalog name.
    fn name(&self) -> &str;
    /// Its source.
    fn source(&self) -> &SourceLabel;
    /// Whether it may claim its name: active or rejected once resolved
    /// (before resolution: its source is available).
    fn may_claim(&self) -> bool;
}

impl Claims for VmEntry {
    fn name(&self) -> &str {
        self.name.as_str()
    }
    fn source(&self) -> &SourceLabel {
        &self.source
    }
    fn may_claim(&self) -> bool {
        matches!(self.state, VmState::Active | VmState::Rejected)
    }
}

impl<T: Claims> Claims for std::sync::Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn source(&self) -> &SourceLabel {
        (**self).source()
    }
    fn may_claim(&self) -> bool {
        (**self).may_claim()
    }
}

impl Claims for Candidate {
    fn name(&self) -> &str {
        self.entry.name()
    }
    fn source(&self) -> &SourceLabel {
        self.entry.source()
    }
    fn may_claim(&self) -> bool {
        self.entry.may_claim()
    }
}

/// Which definition a reference means, as indices into the sorted
/// definitions it was resolved against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Referent {
    /// Every definition of the catalog name it means, in precedence order.
    pub all: Range<usize>,
    /// The definition it means.
    pub pick: usize,
    /// The definition that claims that name, if any.
    pub claimant: Option<usize>,
}

impl Referent {
    /// Whether the definition it means is the VM of its name.
    pub fn is_claimant(&self) -> bool {
        self.claimant == Some(self.pick)
    }

    /// The other definitions of the same catalog name, in precedence order.
    pub fn others(&self) -> impl Iterator<Item = usize> + '_ {
        self.all.clone().filter(|&i| i != self.pick)
    }
}

/// Where in `defs` the definitions named `name` are, in precedence order.
/// `defs` is sorted by catalog name, then precedence.
pub(super) fn range_of<T: Claims>(defs: &[T], name: &str) -> Range<usize> {
    let start = defs.partition_point(|d| d.name() < name);
    let end = start + defs[start..].partition_point(|d| d.name() == name);
    start..end
}

/// The claimant among the definitions of one name (in precedence order):
/// the first that may claim it.
pub(super) fn claimant<T: Claims>(same_name: &[T]) -> Option<usize> {
    same_name.iter().position(Claims::may_claim)
}

/// The qualified reading of `reference`: the leftmost split
/// `<label>.<name>` whose label is a source's (`has_label`) and whose name
/// is a valid VM name.
pub fn qualified(
    reference: &str,
    has_label: impl Fn(&SourceLabel) -> bool,
) -> Option<(SourceLabel, VmName)> {
    reference.match_indices('.').find_map(|(i, _)| {
        let label = SourceLabel::try_from(&reference[..i]).ok()?;
        if !has_label(&label) {
            return None;
        }
        let name = VmName::try_from(&reference[i + 1..]).ok()?;
        Some((label, name))
    })
}

/// The catalog name of the directory `dir` of the source `label`.
pub(super) fn catalog_name(names: Names, label: &SourceLabel, dir: &VmName) -> String {
    match names {
        Names::Plain => dir.as_str().to_owned(),
        Names::Qualified => format!("{label}.{dir}"),
    }
}

/// What `reference` refers to among `defs` (sorted by catalog name, then
/// precedence), whose sources' labels `has_label` knows and whose names
/// were made as `names` says; `None` when it refers to nothing.
pub fn refer<T: Claims>(
    defs: &[T],
    reference: &str,
    has_label: impl Fn(&SourceLabel) -> bool,
    names: Names,
) -> Option<Referent> {
    let claimant_in = |all: &Range<usize>| claimant(&defs[all.clone()]).map(|i| all.start + i);
    if let Some((label, dir)) = qualified(reference, has_label) {
        let all = range_of(defs, &catalog_name(names, &label, &dir));
        let pick = all.clone().find(|&i| defs[i].source() == &label)?;
        return Some(Referent {
            pick,
            claimant: claimant_in(&all),
            all,
        });
    }
    let all = range_of(defs, reference);
    if all.is_empty() {
        return None;
    }
    let claimant = claimant_in(&all);
    Some(Referent {
        pick: claimant.unwrap_or(all.start),
        claimant,
        all,
    })
}

/// Whether the catalog name `name`, of the directory `dir` of the source
/// `source`, reads as a qualified reference to another definition (a user
/// directory `sys.netvm` under plain names): such a definition is rejected
/// (`name-reads-as-reference`), as it could impersonate the one it names.
/// Returns what it reads as.
pub fn reads_as_other(
    name: &str,
    source: &SourceLabel,
    dir: &VmName,
    has_label: impl Fn(&SourceLabel) -> bool,
) -> Option<(SourceLabel, VmName)> {
    qualified(name, has_label).filter(|(label, d)| !(label == source && d == dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Def(&'static str, SourceLabel, VmState);

    fn def(name: &'static str, source: &str, state: VmState) -> Def {
        Def(name, SourceLabel::try_from(source).unwrap(), state)
    }

    impl Claims for Def {
        fn name(&self) -> &str {
            self.0
        }
        fn source(&self) -> &SourceLabel {
            &self.1
        }
        fn may_claim(&self) -> bool {
            matches!(self.2, VmState::Active | VmState::Rejected)
        }
    }

    fn labels(l: &SourceLabel) -> bool {
        ["a", "b", "sys", "user"].contains(&l.as_str())
    }

    #[test]
    fn an_unavailable_first_definition_does_not_claim() {
        let defs = [
            def("x", "a", VmState::Unavailable),
            def("x", "b", VmState::Active),
        ];
        let r = refer(&defs, "x", labels, Names::Plain).unwrap();
        assert_eq!((r.pick, r.claimant), (1, Some(1)));
        assert_eq!(r.others().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn a_rejected_first_definition_claims_and_shadows() {
        let defs = [
            def("x", "a", VmState::Rejected),
            def("x", "b", VmState::Shadowed),
        ];
        let r = refer(&defs, "x", labels, Names::Plain).unwrap();
        assert_eq!((r.pick, r.claimant), (0, Some(0)));
    }

    #[test]
    fn a_name_whose_sources_all_went_away_means_the_first_without_claiming() {
        let defs = [
            def("x", "a", VmState::Unavailable),
            def("x", "b", VmState::Unavailable),
        ];
        let r = refer(&defs, "x", labels, Names::Plain).unwrap();
        assert_eq!((r.pick, r.claimant), (0, None));
        assert!(!r.is_claimant());
    }

    #[test]
    fn a_qualified_reference_means_that_sources_definition() {
        let defs = [
            def("netvm", "sys", VmState::Active),
            def("netvm", "user", VmState::Shadowed),
        ];
        let r = refer(&defs, "user.netvm", labels, Names::Plain).unwrap();
        assert_eq!((r.pick, r.claimant), (1, Some(0)));
        assert!(refer(&defs, "nope.netvm", labels, Names::Plain).is_none());
        let q = [def("sys.netvm", "sys", VmState::Active)];
        let r = refer(&q, "sys.netvm", labels, Names::Qualified).unwrap();
        assert!(r.is_claimant());
    }

    #[test]
    fn a_qualified_reference_with_an_existing_label_wins_over_a_catalog_name() {
        // Plain names: a user directory named `sys.netvm` is not `sys`'s netvm.
        let defs = [
            def("netvm", "sys", VmState::Active),
            def("sys.netvm", "user", VmState::Rejected),
        ];
        let r = refer(&defs, "sys.netvm", labels, Names::Plain).unwrap();
        assert_eq!(r.pick, 0);
        assert!(refer(&defs, "user.sys.netvm", labels, Names::Plain).is_some_and(|r| r.pick == 1));
        // Without such a label, the catalog name.
        let defs = [def("nope.x", "user", VmState::Active)];
        assert_eq!(
            refer(&defs, "nope.x", labels, Names::Plain).unwrap().pick,
            0
        );
    }

    #[test]
    fn a_name_reads_as_another_definition_only_through_an_existing_label() {
        let user = SourceLabel::try_from("user").unwrap();
        let dir = |d: &str| VmName::try_from(d).unwrap();
        assert!(reads_as_other("sys.netvm", &user, &dir("sys.netvm"), labels).is_some());
        assert!(reads_as_other("user.x", &user, &dir("user.x"), labels).is_some());
        assert!(reads_as_other("nope.x", &user, &dir("nope.x"), labels).is_none());
        assert!(reads_as_other("netvm", &user, &dir("netvm"), labels).is_none());
        // Qualified names read as themselves.
        assert!(reads_as_other("user.x", &user, &dir("x"), labels).is_none());
    }

    #[test]
    fn nothing_is_none() {
        let defs = [def("x", "a", VmState::Active)];
        assert!(refer(&defs, "y", labels, Names::Plain).is_none());
        assert!(refer(&defs, "a.y", labels, Names::Plain).is_none());
    }
}
