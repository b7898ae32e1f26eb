//! The interrupt half of the fixes: which GPU lines are delivered off their GPU's node,
//! where they go, and the guard rails (irqbalance first, then the modes, then the cooldown).

use std::collections::BTreeSet;

use super::{cooling, words_only, FixGuards, FixInputs, FixVerdict, IrqFix, IrqMove};
use crate::config::PolicyConfig;
use crate::inventory::Vm;
use crate::topology::normalize_pci_address;

/// The misplaced interrupt lines of each GPU of `vm`, with where they go.
pub(super) fn irq_fixes(config: &PolicyConfig, inputs: &FixInputs, vm: &Vm) -> Vec<IrqFix> {
    let mut fixes = Vec::new();
    for gpu in &vm.gpus {
        let (Some(address), Some(node)) = (normalize_pci_address(&gpu.address), gpu.node) else {
            continue;
        };
        let Some(lines) = inputs.interrupts.by_device.get(&address) else {
            continue;
        };
        let node_cpus = inputs.topology.node_cpus(&[node]);
        let unreserved = node_cpus.difference(&config.reserved_cpus);
        let after = if unreserved.is_empty() {
            node_cpus.clone()
        } else {
            unreserved
        };
        let moves: Vec<IrqMove> = lines
            .iter()
            .filter(|l| {
                l.delivered_to()
                    .is_some_and(|d| d.intersection(&node_cpus).is_empty())
            })
            .filter_map(|l| {
                Some(IrqMove {
                    irq: l.irq,
                    before: l.affinity.clone()?,
                    after: after.clone(),
                })
            })
            .collect();
        if moves.is_empty() || after.is_empty() {
            continue;
        }
        let list: Vec<String> = moves
            .iter()
            .map(|m| format!("IRQ {} {} -> {}", m.irq, m.before, m.after))
            .collect();
        fixes.push(IrqFix {
            domain: vm.name.clone(),
            uuid: vm.uuid.clone(),
            gpu: address.clone(),
            reason: format!(
                "GPU {address} (node {node}) has {} interrupt line(s) delivered off its node: \
                 move {}",
                moves.len(),
                list.join(", ")
            ),
            lines: moves,
            verdict: FixVerdict::Apply,
        });
    }
    fixes
}

pub(super) fn guard_irq(
    config: &PolicyConfig,
    guards: &FixGuards,
    inputs: &FixInputs,
    fix: &mut IrqFix,
) {
    let unbanned: Vec<u32> = match inputs.irqbalance {
        Some(b) => fix
            .lines
            .iter()
            .map(|l| l.irq)
            .filter(|irq| !b.banned.contains(irq))
            .collect(),
        None => Vec::new(),
    };
    let (verdict, why) = if let (Some(b), false) = (inputs.irqbalance, unbanned.is_empty()) {
        let bans: Vec<String> = unbanned.iter().map(|i| format!("--banirq={i}")).collect();
        (
            FixVerdict::SkippedIrqbalance,
            format!(
                "not moved: irqbalance (pid {}) runs and would move it back; ban the IRQ(s) \
                 with `{}` (IRQBALANCE_ARGS in /etc/default/irqbalance or \
                 /etc/sysconfig/irqbalance) and restart irqbalance, or stop irqbalance",
                b.pid,
                bans.join(" ")
            ),
        )
    } else if let Some(why) = words_only(config.irq, "irq", inputs.enforce) {
        (FixVerdict::Recommend, why)
    } else if let Some(why) = cooling(
        guards.irq_acted.get(&fix.uuid),
        config.fix_cooldown_seconds,
        inputs.now,
    ) {
        (FixVerdict::SkippedCooldown, why)
    } else {
        return;
    };
    fix.verdict = verdict;
    fix.reason = format!("{}; {why}", fix.reason);
}

/// The IRQs an irqbalance command line bans: `--banirq=N`, `--banirq N`, `-iN`, `-i N`.
pub fn banned_irqs(cmdline: &[&str]) -> BTreeSet<u32> {
    let mut banned = BTreeSet::new();
    let mut args = cmdline.iter();
    while let Some(arg) = args.next() {
        let value = match *arg {
            "--banirq" | "-i" => args.next().copied(),
            a => a
                .strip_prefix("--banirq=")
                .or_else(|| a.strip_prefix("-i").filter(|v| !v.is_empty())),
        };
        if let Some(irq) = value.and_then(|v| v.parse().ok()) {
            banned.insert(irq);
        }
    }
    banned
}
