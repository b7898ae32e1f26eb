//! A VM's QEMU threads by role: how many, which, and where they ran.

use serde::{Deserialize, Serialize};

use crate::accounting::{ByLocality, DomainTotals};
use crate::inventory::{ThreadRole, Vm};

/// One role's threads of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoleView {
    /// What the threads do.
    pub role: ThreadRole,
    /// How many threads have the role now.
    pub threads: usize,
    /// Their distinct names, sorted ("IO iothread1", "IO mon_iothread").
    pub names: Vec<String>,
    /// On-CPU seconds by locality to the VM's GPUs, departed threads included.
    pub run_seconds: ByLocality<f64>,
}

/// Every role of `vm`, in [`ThreadRole::ALL`] order, also those with no thread now.
pub fn roles(vm: &Vm, totals: &DomainTotals) -> Vec<RoleView> {
    let by_role = totals.run_seconds_by_role();
    ThreadRole::ALL
        .into_iter()
        .map(|role| {
            let mut names: Vec<String> = match role {
                ThreadRole::Vcpu => Vec::new(),
                _ => vm
                    .threads
                    .iter()
                    .filter(|t| t.role == role)
                    .map(|t| t.name.clone())
                    .collect(),
            };
            let threads = match role {
                ThreadRole::Vcpu => vm.vcpus.len(),
                _ => names.len(),
            };
            names.sort();
            names.dedup();
            RoleView {
                role,
                threads,
                names,
                run_seconds: by_role.get(&role).copied().unwrap_or_default(),
            }
        })
        .collect()
}
