//! What the readers' side found about published VMs, for the next
//! generation: a UI VM whose listener was refused ([`DiagCode::ListenerRefused`]).
//!
//! The UI VM listeners follow the published catalog, so what they find
//! comes after a publish; the next rescan's commit shows it as a warning on
//! the VM's entry (every catalog change happens on the rescan worker). A
//! note that changes asks for that rescan: [`VmNotes::set`] says whether it
//! changed.

use std::collections::BTreeMap;
use std::sync::Mutex;

use vm_catalog_protocol::{DiagCode, VmName};

/// Each VM's notes: a code and its message, at most one per code.
pub type Notes = BTreeMap<VmName, BTreeMap<DiagCode, String>>;

/// The notes, shared by who finds them and the rescan's commit.
#[derive(Debug, Default)]
pub struct VmNotes(Mutex<Notes>);

impl VmNotes {
    /// Sets `vm`'s note of `code` to `message`, or clears it (`None`);
    /// whether that changed anything.
    pub fn set(&self, vm: &VmName, code: DiagCode, message: Option<String>) -> bool {
        let mut notes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match message {
            Some(m) => {
                let of_vm = notes.entry(vm.clone()).or_default();
                of_vm.insert(code, m.clone()).as_ref() != Some(&m)
            }
            None => {
                let removed = notes
                    .get_mut(vm)
                    .is_some_and(|of_vm| of_vm.remove(&code).is_some());
                notes.retain(|_, of_vm| !of_vm.is_empty());
                removed
            }
        }
    }

    /// Clears every note of a VM not in `keep`.
    pub fn retain(&self, keep: impl Fn(&VmName) -> bool) {
        let mut notes = self.0.lock().unwrap_or_else(|e| e.into_inner());
        notes.retain(|vm, _| keep(vm));
    }

    /// The notes now.
    pub fn current(&self) -> Notes {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_says_whether_it_changed_and_clears() {
        let notes = VmNotes::default();
        let ui: VmName = "ui".parse().unwrap();
        let code = DiagCode::ListenerRefused;
        assert!(notes.set(&ui, code, Some("a link".into())));
        assert!(
            !notes.set(&ui, code, Some("a link".into())),
            "the same again"
        );
        assert!(notes.set(&ui, code, Some("another".into())));
        assert_eq!(notes.current()[&ui][&code], "another");
        assert!(notes.set(&ui, code, None));
        assert!(!notes.set(&ui, code, None), "nothing to clear");
        assert!(notes.current().is_empty());
        notes.set(&ui, code, Some("x".into()));
        notes.retain(|vm| vm.as_str() != "ui");
        assert!(notes.current().is_empty());
    }
}
