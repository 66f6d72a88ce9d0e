//! Who a UI VM's listener belongs to: the daemon's user, a fixed user, or
//! one user per VM (`--ui-vm-socket-owner 'vmm-{id}'`: on Spectrum the
//! process that connects is the UI VM's VMM, running as `vmm-<id>`).

use vm_catalog_protocol::{VmId, VmName};

use super::socket::Perms;
use super::template::UserTemplate;

/// The listener's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// The daemon's user.
    Unchanged,
    /// This uid.
    Uid(u32),
    /// The user this names for each VM, looked up when its listener is
    /// made (a VM's hook may create it first).
    PerVm(UserTemplate),
}

/// Who may connect to a UI VM's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// Its mode.
    pub mode: u32,
    /// Its owner.
    pub owner: Owner,
    /// Its group, if it should be changed.
    pub group: Option<u32>,
}

/// Why a VM's listener has no owner (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    /// The template needs the VM's id, which it does not have.
    #[error("the owner template needs the VM's id")]
    NoId,
    /// No such user (yet: the VM's hook may make it).
    #[error("no user {0:?} (yet)")]
    NoUser(String),
}

impl Access {
    /// The mode, owner and group of the listener of VM `name` (id `id`).
    pub fn perms(&self, name: &VmName, id: Option<&VmId>) -> Result<Perms, OwnerError> {
        let owner = match &self.owner {
            Owner::Unchanged => None,
            Owner::Uid(uid) => Some(*uid),
            Owner::PerVm(t) => {
                let user = t.expand(name, id).ok_or(OwnerError::NoId)?;
                Some(uid_of(&user).ok_or(OwnerError::NoUser(user))?)
            }
        };
        Ok(Perms {
            mode: self.mode,
            owner,
            group: self.group,
        })
    }
}

/// The uid of the user called `name`, from the user database.
pub fn uid_of(name: &str) -> Option<u32> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: `libc::passwd` is a plain C struct of integers and pointers,
    // for which all-zero bytes are a valid (empty) value.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is
    // NUL-terminated, `pw` and `buf` outlive it and `buf.len()` is its size;
    // `result` is written by the call.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(pw.pw_uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_per_vm_owner_is_looked_up_for_each_vm() {
        let access = Access {
            mode: 0o600,
            owner: Owner::PerVm(UserTemplate::parse("{name}").unwrap().unwrap()),
            group: None,
        };
        let root: VmName = "root".parse().unwrap();
        assert_eq!(access.perms(&root, None).unwrap().owner, Some(0));
        let nobody: VmName = "no-such-user-here".parse().unwrap();
        assert_eq!(
            access.perms(&nobody, None),
            Err(OwnerError::NoUser("no-such-user-here".into()))
        );
        let by_id = Access {
            owner: Owner::PerVm(UserTemplate::parse("vmm-{id}").unwrap().unwrap()),
            ..access
        };
        assert_eq!(by_id.perms(&root, None), Err(OwnerError::NoId));
    }
}
