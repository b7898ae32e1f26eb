//! The memory half of the fixes: whether a GPU VM's memory is mostly off its GPU's node(s)
//! while its vCPUs sit by it, how to move it (a live numatune, migrate_pages, or a changed
//! definition and a restart), and the guard rails (the modes, the cooldown, the budget).

use std::collections::BTreeMap;

use super::{
    cooling, words_only, FixGuards, FixInputs, FixVerdict, MemoryFix, MemoryMethod,
    BUDGET_ACCRUAL_SECONDS,
};
use crate::config::PolicyConfig;
use crate::cpuset::CpuSet;
use crate::inventory::{Vm, Vmm};

/// The memory move of `vm`, when its vCPUs sit by its GPU and its memory mostly does not.
pub(super) fn memory_fix(config: &PolicyConfig, inputs: &FixInputs, vm: &Vm) -> Option<MemoryFix> {
    let resident = inputs.memory.get(&vm.name)?;
    // Hugetlb pages on nodes unknown (no hugetlb cgroup counts them, no walk placed them):
    // most of a hugepage-backed VM's RAM may be among them, so the figures below are not its
    // memory's place and nothing is moved on them.
    if resident.hugetlb_node_unknown > 0 {
        return None;
    }
    let by_node = &resident.by_node;
    let total: u64 = by_node.values().sum();
    let off: BTreeMap<u32, u64> = by_node
        .iter()
        .filter(|(node, bytes)| !vm.gpu_nodes.contains(node) && **bytes > 0)
        .map(|(n, b)| (*n, *b))
        .collect();
    let bytes: u64 = off.values().sum();
    if total == 0 || (bytes as f64) < config.memory_remote_high * total as f64 {
        return None;
    }
    let off_ratio = bytes as f64 / total as f64;
    let far = inputs.topology.far_cpus(&vm.gpu_nodes);
    let confined = vm
        .vcpus
        .iter()
        .all(|t| t.allowed_cpus.intersection(&far).is_empty());
    let ran_near = inputs
        .remote_ratios
        .get(&vm.name)
        .is_some_and(|r| *r <= config.remote_ratio_clear);
    // Memory follows the vCPUs: moving it to the GPU while they run far would only make it
    // remote to them. The repin comes first.
    if !(confined || ran_near) {
        return None;
    }
    let to: CpuSet = vm.gpu_nodes.iter().copied().collect();
    let from: CpuSet = off.keys().copied().collect();
    let where_ = format!(
        "{:.0}% of its memory ({} MiB) is on node(s) {from}, off its GPU's node(s) {to} \
         (memory_remote_high = {}), while its vCPUs {}",
        off_ratio * 100.0,
        bytes >> 20,
        config.memory_remote_high,
        if confined {
            "may run only on the GPU's socket"
        } else {
            "ran on the GPU's socket"
        }
    );
    let numatune = vm.spec.numatune.as_ref().filter(|_| vm.vmm == Vmm::Libvirt);
    let (method, reason) = match numatune.map(|n| (n.mode.as_str(), n.nodeset.as_deref())) {
        Some(("strict", nodeset)) => (
            MemoryMethod::Restart,
            format!(
                "{where_}; its numatune is mode='strict' (nodeset {}): libvirt refuses a live \
                 nodeset change and the cgroup's cpuset.mems bounds migrate_pages, so: \
                 `virsh numatune {} --nodeset {to} --config`, then restart the VM",
                nodeset.unwrap_or("auto"),
                vm.name
            ),
        ),
        Some(("restrictive", nodeset)) => (
            MemoryMethod::Numatune {
                before: nodeset.unwrap_or_default().to_string(),
                after: to.to_string(),
            },
            format!("{where_}; move it with a live numatune nodeset {to} (mode='restrictive')"),
        ),
        Some((mode, _)) => (
            MemoryMethod::MigratePages,
            format!(
                "{where_}; move it with migrate_pages of QEMU pid {} (numatune mode='{mode}' \
                 places new pages by its own nodeset: `virsh numatune --config` changes that)",
                vm.pid
            ),
        ),
        None => (
            MemoryMethod::MigratePages,
            format!(
                "{where_}; move it with migrate_pages of QEMU pid {}",
                vm.pid
            ),
        ),
    };
    let verdict = if method == MemoryMethod::Restart {
        FixVerdict::NeedsRestart
    } else {
        FixVerdict::Apply
    };
    Some(MemoryFix {
        domain: vm.name.clone(),
        uuid: vm.uuid.clone(),
        pid: vm.pid,
        bytes,
        off_ratio,
        from,
        to,
        method,
        verdict,
        reason,
    })
}

pub(super) fn guard_memory(
    config: &PolicyConfig,
    guards: &FixGuards,
    inputs: &FixInputs,
    fix: &mut MemoryFix,
    allowance: &mut f64,
) {
    if fix.verdict != FixVerdict::Apply {
        return;
    }
    let (verdict, why) = if let Some(why) = words_only(config.memory, "memory", inputs.enforce) {
        (FixVerdict::Recommend, why)
    } else if let Some(why) = cooling(
        guards.memory_acted.get(&fix.uuid),
        config.fix_cooldown_seconds,
        inputs.now,
    ) {
        (FixVerdict::SkippedCooldown, why)
    } else if (fix.bytes as f64) > *allowance {
        let rate = config.memory_bytes_per_second;
        let most = rate * BUDGET_ACCRUAL_SECONDS;
        let why = if fix.bytes as f64 > most {
            format!(
                "not moved: {} bytes exceed what the budget ever accrues ({most:.0} bytes = \
                 policy.memory_bytes_per_second x {BUDGET_ACCRUAL_SECONDS} s)",
                fix.bytes
            )
        } else {
            format!(
                "waits {:.0}s more for the memory budget ({:.0} of {} bytes accrued at \
                 policy.memory_bytes_per_second = {rate})",
                (fix.bytes as f64 - *allowance) / rate,
                *allowance,
                fix.bytes
            )
        };
        (FixVerdict::WaitingBudget, why)
    } else {
        *allowance -= fix.bytes as f64;
        return;
    };
    fix.verdict = verdict;
    fix.reason = format!("{}; {why}", fix.reason);
}
