//! Where a UI VM's listener goes: a path template (`--ui-vm-socket`) with
//! `{vm-dir}`, `{name}`, `{id}` and `{port}`.

use std::path::{Path, PathBuf};

use vm_catalog_protocol::{VmId, VmName};

use crate::catalog::Layout;

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `{…}` that is not a placeholder, or a brace left open.
    #[error("unknown placeholder {0:?}: use {{vm-dir}}, {{name}}, {{id}}, {{port}}")]
    Placeholder(String),
    /// Nothing in it tells two VMs apart.
    #[error("the template names no VM: it needs {{name}} or {{id}}")]
    NoVm,
    /// A `{…}` in a user template that is not `{id}` or `{name}`.
    #[error("unknown placeholder {0:?}: use {{id}} or {{name}}")]
    UserPlaceholder(String),
    /// It does not make an absolute path.
    #[error("the template must start with / or {{vm-dir}}")]
    Relative,
}

/// A checked path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketTemplate(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    VmDir,
    Name,
    Id,
    Port,
}

/// `s` cut into text and the placeholders in `allowed`.
fn pieces(s: &str, allowed: &[&str]) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find('{') {
        if at > 0 {
            pieces.push(Piece::Text(rest[..at].to_owned()));
        }
        let close = rest[at..]
            .find('}')
            .ok_or_else(|| TemplateError::Placeholder(rest[at..].to_owned()))?;
        let name = &rest[at + 1..at + close];
        if !allowed.contains(&name) {
            return Err(TemplateError::Placeholder(format!("{{{name}}}")));
        }
        pieces.push(match name {
            "vm-dir" => Piece::VmDir,
            "name" => Piece::Name,
            "id" => Piece::Id,
            _ => Piece::Port,
        });
        rest = &rest[at + close + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_owned()));
    }
    Ok(pieces)
}

/// A user name with `{id}` or `{name}` in it (`--ui-vm-socket-owner
/// 'vmm-{id}'`): one user per VM, looked up when its listener is made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserTemplate(Vec<Piece>);

impl UserTemplate {
    /// Parses `s`; `None` if it has no placeholder (a plain user).
    ///
    /// ```
    /// use vm_catalogd::rpc::ui_vm::UserTemplate;
    /// assert!(UserTemplate::parse("vmm-{id}").unwrap().is_some());
    /// assert!(UserTemplate::parse("vmm").unwrap().is_none());
    /// assert!(UserTemplate::parse("vmm-{port}").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Option<UserTemplate>, TemplateError> {
        if !s.contains('{') {
            return Ok(None);
        }
        let pieces = pieces(s, &["name", "id"]).map_err(|e| match e {
            TemplateError::Placeholder(p) => TemplateError::UserPlaceholder(p),
            e => e,
        })?;
        Ok(Some(UserTemplate(pieces)))
    }

    /// The user of the VM `name` (id `id`); `None` if the template needs
    /// an id the VM does not have.
    pub fn expand(&self, name: &VmName, id: Option<&VmId>) -> Option<String> {
        let mut out = String::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push_str(t),
                Piece::Name => out.push_str(name.as_str()),
                Piece::Id => out.push_str(id?.as_str()),
                Piece::VmDir | Piece::Port => {}
            }
        }
        Some(out)
    }
}

/// The listener beside the VM's view: `{vm-dir}/{name}/vsock_{port}`.
const PLAIN: &str = "{vm-dir}/{name}/vsock_{port}";

/// Spectrum's: its VMMs get `--vsock socket=/run/vsock/<id>/vsock`.
const SPECTRUM: &str = "/run/vsock/{id}/vsock_{port}";

impl SocketTemplate {
    /// Parses `s`.
    ///
    /// ```
    /// use vm_catalogd::rpc::ui_vm::SocketTemplate;
    /// assert!(SocketTemplate::parse("{vm-dir}/{name}/vsock_{port}").is_ok());
    /// assert!(SocketTemplate::parse("/run/vsock/{id}/vsock_{port}").is_ok());
    /// assert!(SocketTemplate::parse("/run/one-for-all").is_err());
    /// assert!(SocketTemplate::parse("{vm-dir}/{nmae}").is_err());
    /// assert!(SocketTemplate::parse("vsock/{name}").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<SocketTemplate, TemplateError> {
        let pieces = pieces(s, &["vm-dir", "name", "id", "port"])?;
        if !pieces.iter().any(|p| matches!(p, Piece::Name | Piece::Id)) {
            return Err(TemplateError::NoVm);
        }
        match pieces.first() {
            Some(Piece::VmDir) => {}
            Some(Piece::Text(t)) if t.starts_with('/') => {}
            _ => return Err(TemplateError::Relative),
        }
        Ok(SocketTemplate(pieces))
    }

    /// The default for `layout`.
    pub fn default_for(layout: Layout) -> SocketTemplate {
        let text = match layout {
            Layout::Plain => PLAIN,
            Layout::Spectrum => SPECTRUM,
        };
        SocketTemplate::parse(text).expect("the defaults parse")
    }

    /// The path for the VM `name` (id `id`) on `port`; `None` if the
    /// template needs an id the VM does not have.
    pub fn expand(
        &self,
        vm_dir: &Path,
        name: &VmName,
        id: Option<&VmId>,
        port: u32,
    ) -> Option<PathBuf> {
        let mut out = std::ffi::OsString::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.push(t),
                Piece::VmDir => out.push(vm_dir.as_os_str()),
                Piece::Name => out.push(name.as_str()),
                Piece::Id => out.push(id?.as_str()),
                Piece::Port => out.push(port.to_string()),
            }
        }
        Some(PathBuf::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_beside_the_view_by_default() {
        let t = SocketTemplate::default_for(Layout::Plain);
        let name: VmName = "ui".parse().unwrap();
        assert_eq!(
            t.expand(Path::new("/run/vm"), &name, None, 22083),
            Some(PathBuf::from("/run/vm/ui/vsock_22083"))
        );
        let t = SocketTemplate::default_for(Layout::Spectrum);
        assert_eq!(t.expand(Path::new("/run/vm"), &name, None, 5), None);
        let id: VmId = "a1b2c3".parse().unwrap();
        assert_eq!(
            t.expand(Path::new("/run/vm"), &name, Some(&id), 5),
            Some(PathBuf::from("/run/vsock/a1b2c3/vsock_5"))
        );
    }

    #[test]
    fn bad_templates_say_why() {
        assert_eq!(
            SocketTemplate::parse("{vm-dir}/{name"),
            Err(TemplateError::Placeholder("{name".into()))
        );
        assert_eq!(
            SocketTemplate::parse("{vm-dir}/x_{port}"),
            Err(TemplateError::NoVm)
        );
        assert_eq!(
            SocketTemplate::parse("{name}/x"),
            Err(TemplateError::Relative)
        );
    }
}
