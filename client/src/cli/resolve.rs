//! `vm-catalog resolve NAME`: the service name of a startable VM.

use vm_catalog_protocol::{VmName, VmState};

use super::{EXIT_FAILURE, EXIT_NOT_FOUND, Failure, connect, out, text};
use crate::Endpoint;

/// Prints the service of `name`, or fails with exit 3 when the VM cannot be
/// started (unknown, rejected, unavailable).
pub async fn run(endpoint: &Endpoint, name: &VmName) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    let d = client.get_vm(name).await.map_err(|e| {
        if e.is_not_found() {
            Failure {
                message: format!("no VM named {name}"),
                code: EXIT_NOT_FOUND,
            }
        } else {
            e.into()
        }
    })?;
    let vm = d.vm;
    if vm.state != VmState::Active {
        return Err(Failure {
            message: format!(
                "{name} ({}) is {}: {}",
                vm.source,
                vm.state.as_str(),
                text::reason(&vm)
            ),
            code: EXIT_NOT_FOUND,
        });
    }
    match vm.service {
        Some(service) => {
            out(service);
            Ok(())
        }
        None => Err(Failure {
            message: format!(
                "{name} is active but not in the service database (applier: see `vm-catalog status`)"
            ),
            code: EXIT_FAILURE,
        }),
    }
}
