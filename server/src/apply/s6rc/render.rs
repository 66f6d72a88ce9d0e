//! Rendering: the s6-rc source tree for a set of active VMs, in memory.
//!
//! Every VM is checked *before* anything is compiled (s6rc.md §3.1: a name
//! that compiles can still wreck the update after the switch). A VM that
//! cannot be a service — its scan-directory name is too long or taken, its
//! view path is unsafe, a provider is missing or left out, it sits on a
//! provider cycle — is left out of the database with a diagnostic, and so is
//! every VM that depends on it; the others are rendered. Too many services is
//! an error for the whole set, since nothing says which VMs to drop.
//!
//! The tree is fingerprinted here, so that an apply whose tree equals the
//! live one costs a render and a hash, and nothing else.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use vm_catalog_protocol::{DiagCode, VmName};

use super::template::{Node, Template, Values};
use crate::apply::applier::{ActiveVm, LeftOut};
use crate::apply::fingerprint::{Fingerprint, Hasher};

/// Longest `prefix + name` in the scan directory: s6-svscan ≥ 2.12 ignores
/// longer names (`-L`, default 251) and s6 2.11 fails after the switch above
/// 255 (s6rc.md §1.1, §2.6).
pub const MAX_SCANDIR_NAME: usize = 251;

/// One rendered file, directory or symlink of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        contents: Vec<u8>,
        /// Mode 0755 rather than 0644.
        executable: bool,
    },
    Dir,
    /// A symlink with this target.
    Symlink(Vec<u8>),
}

/// One VM's rendered service directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The template's entries, rendered, sorted, parents first.
    pub entries: Vec<(PathBuf, Entry)>,
    /// Its providers, sorted: written as `dependencies.d/<name>`.
    pub dependencies: Vec<VmName>,
    /// Fingerprint of the files of the service directory.
    pub content: Fingerprint,
    /// Fingerprint of everything the VM would start with: the service
    /// directory and the VM's own [`ActiveVm::fingerprint`].
    pub definition: Fingerprint,
}

/// The rendered source tree: one service per VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// VM name (= service name) → service.
    pub services: BTreeMap<VmName, Service>,
    /// Fingerprint of the whole tree: equal fingerprints compile to the
    /// same database.
    pub fingerprint: Fingerprint,
}

impl Tree {
    /// VM name → definition fingerprint.
    pub fn definitions(&self) -> BTreeMap<VmName, Fingerprint> {
        self.services
            .iter()
            .map(|(n, s)| (n.clone(), s.definition))
            .collect()
    }
}

/// A rendered tree, and the VMs left out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The services.
    pub tree: Tree,
    /// The VMs left out, and why.
    pub left_out: Vec<LeftOut>,
}

/// Why nothing was rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// More services than the configured maximum.
    #[error("{count} vm services exceed the maximum of {max}")]
    TooManyServices {
        /// Services that would be in the database.
        count: usize,
        /// The configured maximum.
        max: usize,
    },
}

/// Renders trees from a template.
#[derive(Debug, Clone)]
pub struct Renderer {
    template: Template,
    prefix: String,
    start: String,
    max_services: usize,
}

impl Renderer {
    /// A renderer for services linked as `<prefix><name>` in the scan
    /// directory, started with `start`, at most `max_services` of them.
    pub fn new(template: Template, prefix: &str, start: &str, max_services: usize) -> Renderer {
        Renderer {
            template,
            prefix: prefix.to_owned(),
            start: start.to_owned(),
            max_services,
        }
    }

    /// Renders `vms`. `conflict(name)` says whether `<prefix><name>` in the
    /// scan directory belongs to something else, and what.
    pub fn render(
        &self,
        vms: &[ActiveVm],
        conflict: &mut dyn FnMut(&VmName) -> Option<String>,
    ) -> Result<Rendered, RenderError> {
        let (keep, left_out) = self.select(vms, conflict);
        if keep.len() > self.max_services {
            return Err(RenderError::TooManyServices {
                count: keep.len(),
                max: self.max_services,
            });
        }
        let services: BTreeMap<VmName, Service> = keep
            .into_values()
            .map(|vm| (vm.name.clone(), self.service(vm)))
            .collect();
        let mut h = Hasher::new("vm-catalog/s6-rc/tree/v1");
        for (name, s) in &services {
            h.bytes(name.as_bytes()).fingerprint(&s.content);
        }
        let tree = Tree {
            services,
            fingerprint: h.finish(),
        };
        Ok(Rendered { tree, left_out })
    }

    /// Splits `vms` into those that can be services and those left out.
    fn select<'a>(
        &self,
        vms: &'a [ActiveVm],
        conflict: &mut dyn FnMut(&VmName) -> Option<String>,
    ) -> (BTreeMap<&'a VmName, &'a ActiveVm>, Vec<LeftOut>) {
        let mut keep: BTreeMap<&VmName, &ActiveVm> = BTreeMap::new();
        let mut out = Vec::new();
        let leave = |out: &mut Vec<LeftOut>, vm: &VmName, code, message: String| {
            out.push(LeftOut {
                vm: vm.clone(),
                code,
                message,
            });
        };
        for vm in vms {
            let link = self.prefix.len() + vm.name.len();
            let view = vm.view.to_str().filter(|v| is_safe_path(v));
            if keep.contains_key(&vm.name) {
                let msg = "appears twice in the active set".to_string();
                leave(&mut out, &vm.name, DiagCode::InvalidName, msg);
            } else if link > MAX_SCANDIR_NAME {
                let msg = format!(
                    "scan directory name {}{} is {link} bytes long, the limit is {MAX_SCANDIR_NAME}",
                    self.prefix, vm.name
                );
                leave(&mut out, &vm.name, DiagCode::NameTooLong, msg);
            } else if view.is_none() {
                let msg = format!(
                    "view path {} is not an absolute path of letters, digits and ._/+-",
                    vm.view.display()
                );
                leave(&mut out, &vm.name, DiagCode::InvalidPath, msg);
            } else if let Some(what) = conflict(&vm.name) {
                let msg = format!(
                    "scan directory entry {}{} is taken by {what}",
                    self.prefix, vm.name
                );
                leave(&mut out, &vm.name, DiagCode::ServiceConflict, msg);
            } else {
                keep.insert(&vm.name, vm);
            }
        }
        let all: BTreeSet<&VmName> = vms.iter().map(|v| &v.name).collect();
        loop {
            let mut dropped = false;
            let names: Vec<&VmName> = keep.keys().copied().collect();
            for name in names {
                let vm = keep[name];
                if let Some(p) = vm.providers.iter().find(|p| !keep.contains_key(p)) {
                    let (code, msg) = if all.contains(p) {
                        (
                            DiagCode::ProviderUnavailable,
                            format!("provider {p} is left out too"),
                        )
                    } else {
                        (
                            DiagCode::MissingProvider,
                            format!("provider {p} is not an active vm"),
                        )
                    };
                    keep.remove(name);
                    leave(&mut out, name, code, msg);
                    dropped = true;
                }
            }
            for name in on_or_after_cycle(&keep) {
                keep.remove(name);
                let msg = "is on, or depends on, a cycle of providers".to_string();
                leave(&mut out, name, DiagCode::ProviderCycle, msg);
                dropped = true;
            }
            if !dropped {
                break;
            }
        }
        out.sort_by(|a, b| a.vm.cmp(&b.vm));
        (keep, out)
    }

    fn service(&self, vm: &ActiveVm) -> Service {
        let values = Values {
            name: vm.name.as_str(),
            // Checked by `select`.
            view: vm.view.to_str().unwrap_or_default(),
            start: &self.start,
        };
        let mut h = Hasher::new("vm-catalog/s6-rc/service/v1");
        let mut entries = Vec::with_capacity(self.template.entries().len());
        for (path, node) in self.template.entries() {
            let entry = match node {
                Node::File {
                    contents,
                    executable,
                } => Entry::File {
                    contents: contents.render(&values),
                    executable: *executable,
                },
                Node::Dir => Entry::Dir,
                Node::Symlink(target) => Entry::Symlink(target.render(&values)),
            };
            h.bytes(path.as_os_str().as_encoded_bytes());
            match &entry {
                Entry::File {
                    contents,
                    executable,
                } => {
                    h.u64(1 + u64::from(*executable)).bytes(contents);
                }
                Entry::Dir => {
                    h.u64(3);
                }
                Entry::Symlink(target) => {
                    h.u64(4).bytes(target);
                }
            }
            entries.push((path.clone(), entry));
        }
        let dependencies: Vec<VmName> = vm
            .providers
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        h.u64(dependencies.len() as u64);
        for d in &dependencies {
            h.bytes(d.as_bytes());
        }
        let content = h.finish();
        let mut d = Hasher::new("vm-catalog/s6-rc/definition/v1");
        d.fingerprint(&content).u64(vm.fingerprint);
        Service {
            entries,
            dependencies,
            content,
            definition: d.finish(),
        }
    }
}

/// The VMs that no topological order reaches: those on a provider cycle and
/// those that depend on one.
fn on_or_after_cycle<'a>(keep: &BTreeMap<&'a VmName, &ActiveVm>) -> Vec<&'a VmName> {
    let mut done: BTreeSet<&VmName> = BTreeSet::new();
    loop {
        let before = done.len();
        for (name, vm) in keep {
            if !done.contains(name) && vm.providers.iter().all(|p| done.contains(p)) {
                done.insert(name);
            }
        }
        if done.len() == before {
            break;
        }
    }
    keep.keys().copied().filter(|n| !done.contains(n)).collect()
}

/// An absolute path made of ASCII letters, digits and `._/+-` only: safe in
/// an execline or shell script without quoting.
pub fn is_safe_path(p: &str) -> bool {
    p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'/' | b'+' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn vm(name: &str, providers: &[&str], fp: u64) -> ActiveVm {
        ActiveVm {
            name: name.parse().unwrap(),
            view: format!("/run/vm/{name}/config").into(),
            providers: providers.iter().map(|p| p.parse().unwrap()).collect(),
            fingerprint: fp,
            id: name.replace(['-', '_', '.'], "").parse().unwrap(),
        }
    }

    fn renderer(max: usize) -> Renderer {
        Renderer::new(Template::builtin(), "vm-", "/bin/start-vmm", max)
    }

    fn render(vms: &[ActiveVm]) -> Rendered {
        renderer(100).render(vms, &mut |_| None).unwrap()
    }

    fn names(r: &Rendered) -> Vec<String> {
        r.tree.services.keys().map(|n| n.to_string()).collect()
    }

    fn left(r: &Rendered) -> Vec<(String, DiagCode)> {
        r.left_out
            .iter()
            .map(|l| (l.vm.to_string(), l.code))
            .collect()
    }

    #[test]
    fn renders_one_service_per_vm_with_dependencies() {
        let r = render(&[vm("app", &["net", "net"], 1), vm("net", &[], 2)]);
        assert_eq!(names(&r), ["app", "net"]);
        let app = &r.tree.services["app"];
        assert_eq!(app.dependencies, ["net".parse::<VmName>().unwrap()]);
        let run = app
            .entries
            .iter()
            .find(|(p, _)| p.as_os_str() == "run")
            .unwrap();
        let want = b"#!/bin/execlineb -P\n/bin/start-vmm app\n".to_vec();
        assert_eq!(
            run.1,
            Entry::File {
                contents: want,
                executable: true
            }
        );
        assert!(r.left_out.is_empty());
    }

    #[test]
    fn tree_fingerprint_follows_content_not_vm_fingerprints() {
        let a = render(&[vm("app", &[], 1), vm("net", &[], 2)]);
        let same = render(&[vm("net", &[], 2), vm("app", &[], 1)]);
        assert_eq!(
            a.tree.fingerprint, same.tree.fingerprint,
            "order does not matter"
        );
        let view_changed = render(&[vm("app", &[], 9), vm("net", &[], 2)]);
        assert_eq!(a.tree.fingerprint, view_changed.tree.fingerprint);
        assert_ne!(
            a.tree.services["app"].definition,
            view_changed.tree.services["app"].definition
        );
        assert_eq!(
            a.tree.services["net"].definition,
            view_changed.tree.services["net"].definition
        );
        let dep_added = render(&[vm("app", &["net"], 1), vm("net", &[], 2)]);
        assert_ne!(a.tree.fingerprint, dep_added.tree.fingerprint);
        let removed = render(&[vm("app", &[], 1)]);
        assert_ne!(a.tree.fingerprint, removed.tree.fingerprint);
        let other_start = Renderer::new(Template::builtin(), "vm-", "/bin/other", 100)
            .render(&[vm("app", &[], 1), vm("net", &[], 2)], &mut |_| None)
            .unwrap();
        assert_ne!(a.tree.fingerprint, other_start.tree.fingerprint);
    }

    #[test]
    fn too_many_services_refuses_the_whole_set() {
        let vms: Vec<_> = (0..4).map(|i| vm(&format!("v{i}"), &[], 0)).collect();
        let e = renderer(3).render(&vms, &mut |_| None).unwrap_err();
        assert_eq!(e, RenderError::TooManyServices { count: 4, max: 3 });
        assert_eq!(e.to_string(), "4 vm services exceed the maximum of 3");
        assert!(renderer(4).render(&vms, &mut |_| None).is_ok());
    }

    #[test]
    fn a_taken_scandir_name_leaves_out_the_vm_and_its_dependants() {
        let vms = [
            vm("app", &["net"], 0),
            vm("net", &[], 0),
            vm("other", &[], 0),
        ];
        let r = renderer(10)
            .render(&vms, &mut |n| {
                (n.as_str() == "net").then(|| "a host service".to_string())
            })
            .unwrap();
        assert_eq!(names(&r), ["other"]);
        assert_eq!(
            left(&r),
            [
                ("app".to_string(), DiagCode::ProviderUnavailable),
                ("net".to_string(), DiagCode::ServiceConflict)
            ]
        );
        assert_eq!(
            r.left_out[1].message,
            "scan directory entry vm-net is taken by a host service"
        );
    }

    #[test]
    fn a_too_long_scandir_name_is_left_out() {
        let prefix = "p".repeat(MAX_SCANDIR_NAME - 3);
        let r = Renderer::new(Template::builtin(), &prefix, "/s", 10)
            .render(&[vm("abc", &[], 0), vm("abcd", &[], 0)], &mut |_| None)
            .unwrap();
        assert_eq!(names(&r), ["abc"]);
        assert_eq!(left(&r), [("abcd".to_string(), DiagCode::NameTooLong)]);
    }

    #[test]
    fn missing_providers_cycles_and_unsafe_views_are_left_out() {
        let mut bad_view = vm("spacey", &[], 0);
        bad_view.view = "/run/vm/a b/config".into();
        let vms = [
            vm("a", &["b"], 0),
            vm("b", &["a"], 0),
            vm("c", &["a"], 0),
            vm("d", &["ghost"], 0),
            vm("e", &[], 0),
            bad_view,
        ];
        let r = render(&vms);
        assert_eq!(names(&r), ["e"]);
        assert_eq!(
            left(&r),
            [
                ("a".to_string(), DiagCode::ProviderCycle),
                ("b".to_string(), DiagCode::ProviderCycle),
                ("c".to_string(), DiagCode::ProviderCycle),
                ("d".to_string(), DiagCode::MissingProvider),
                ("spacey".to_string(), DiagCode::InvalidPath),
            ]
        );
    }

    #[test]
    fn safe_paths() {
        assert!(is_safe_path("/bin/start-vmm"));
        assert!(is_safe_path("/run/vm/a.b_c+d/config"));
        for bad in ["bin/x", "/a b", "/a\nb", "/a;b", "/a\"b", "/a$b", ""] {
            assert!(!is_safe_path(bad), "{bad:?}");
        }
    }
}
