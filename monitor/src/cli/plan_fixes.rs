//! The memory and interrupt fixes in `pinsight plan`: a running daemon's own evaluation when
//! one answers (it knows the cooldowns and the budget), else one made here from this host's
//! memory cgroups, /proc/interrupts (under `irq_proc_root`) and irqbalance, with the whole
//! budget available and no cooldown.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use crate::config::Config;
use crate::inventory::Inventory;
use crate::policy::fixes::{
    self, FixGuards, FixInputs, FixPlan, MemoryMethod, BUDGET_ACCRUAL_SECONDS,
};
use crate::policy::unix_now;
use crate::topology::Topology;
use crate::view::HostView;

/// The fixes enforce would make now, and where the answer comes from.
pub fn fix_plan(
    config: &Config,
    topology: &Topology,
    inventory: &Inventory,
    daemon: Option<&HostView>,
) -> (FixPlan, String) {
    if let Some(fixes) = daemon.and_then(|v| v.fixes.as_ref()) {
        return (fixes.plan.clone(), "the daemon's own evaluation".into());
    }
    let memory: BTreeMap<String, _> = inventory
        .vms
        .iter()
        .filter_map(|vm| {
            let bytes =
                crate::memory::read(Path::new("/proc"), &config.cgroup_root, vm.pid).ok()?;
            Some((vm.name.clone(), bytes))
        })
        .collect();
    let interrupts = crate::interrupts::read(&config.irq_proc_root).unwrap_or_default();
    let irqbalance = crate::irqbalance::find(&config.irq_proc_root);
    let remote_ratios: BTreeMap<String, f64> = daemon
        .map(|v| {
            v.vms
                .iter()
                .filter_map(|vm| Some((vm.domain.clone(), vm.remote_ratio?)))
                .collect()
        })
        .unwrap_or_default();
    let now = unix_now();
    let plan = fixes::evaluate(
        &config.policy,
        &FixGuards::new(now - BUDGET_ACCRUAL_SECONDS),
        &FixInputs {
            topology,
            vms: &inventory.vms,
            memory: &memory,
            remote_ratios: &remote_ratios,
            interrupts: &interrupts,
            irqbalance: irqbalance.as_ref(),
            enforce: true,
            now,
        },
    );
    (plan, "read here (no cooldowns, the whole budget)".into())
}

/// The fixes for people.
pub fn render(plan: &FixPlan, source: &str) -> String {
    let mut out = format!("\nMemory and interrupt fixes ({source}):\n");
    if let Some(b) = &plan.irqbalance {
        let _ = writeln!(
            out,
            "  irqbalance runs (pid {}): lines it may move are reported, not moved",
            b.pid
        );
    }
    if plan.memory.is_empty() && plan.irq.is_empty() {
        out.push_str("  none: no GPU VM has memory (with its vCPUs by the GPU) or an interrupt line off its GPU's node\n");
    }
    for f in &plan.memory {
        let how = match &f.method {
            MemoryMethod::Numatune { before, after } => format!("numatune {before} -> {after}"),
            MemoryMethod::MigratePages => format!("migrate_pages {} -> {}", f.from, f.to),
            MemoryMethod::Restart => "restart needed".into(),
        };
        let _ = writeln!(
            out,
            "  {}: memory [{}] {how}: {}",
            f.domain,
            f.verdict.outcome(),
            f.reason
        );
    }
    for f in &plan.irq {
        let _ = writeln!(
            out,
            "  {}: GPU {} interrupts [{}]: {}",
            f.domain,
            f.gpu,
            f.verdict.outcome(),
            f.reason
        );
    }
    out
}
