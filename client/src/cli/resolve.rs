//! `vm-catalog resolve NAME`: the service name of a startable VM, and with
//! `--with-providers` the services of its network providers before it.

use std::collections::BTreeSet;

use vm_catalog_protocol::{VmName, VmState};

use super::{EXIT_FAILURE, EXIT_NOT_FOUND, Failure, connect, out, text};
use crate::{Client, Endpoint};

/// Prints the service of `name`, or fails with exit 3 when the VM cannot be
/// started (unknown, rejected, unavailable). With `with_providers`, first
/// the services of its providers, transitively, each once, every provider
/// before the VMs it provides for: the order to start them in where nothing
/// else knows the dependencies (s6 instances). One service per line.
pub(super) async fn run(
    endpoint: &Endpoint,
    name: &VmName,
    with_providers: bool,
) -> Result<(), Failure> {
    let client = connect(endpoint).await?;
    if !with_providers {
        out(service(&client, name).await?.1);
        return Ok(());
    }
    let mut order = Vec::new();
    let mut seen = BTreeSet::new();
    // (VM, its providers are listed already)
    let mut stack = vec![(name.clone(), false)];
    while let Some((vm, expanded)) = stack.pop() {
        if expanded {
            order.push(service(&client, &vm).await?.1);
            continue;
        }
        if !seen.insert(vm.clone()) {
            continue;
        }
        let (providers, _) = service(&client, &vm).await?;
        stack.push((vm, true));
        stack.extend(providers.into_iter().rev().map(|p| (p, false)));
    }
    out(order.join("\n"));
    Ok(())
}

/// The providers and the service of `name`, if it can be started.
async fn service(client: &Client, name: &VmName) -> Result<(Vec<VmName>, String), Failure> {
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
        Some(service) => Ok((vm.providers.into_iter().map(|p| p.name).collect(), service)),
        None => Err(Failure {
            message: format!(
                "{name} is active but has no service (applier: see `vm-catalog status`)"
            ),
            code: EXIT_FAILURE,
        }),
    }
}
