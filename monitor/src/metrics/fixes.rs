//! The memory and interrupt fixes: what is recommended now, what was done by outcome, and
//! whether irqbalance runs (pinsight reports rather than fights it).

use prometheus::proto::MetricType;

use super::text::{bounded_label, Family};
use crate::view::HostView;

/// The fixes' families, when the policy evaluated them (recommend / enforce modes).
pub(super) fn families(view: &HostView, cut: &mut u64) -> Vec<Family> {
    let mut memory_recommended = Family::new(
        "pinsight_memory_move_recommended",
        MetricType::GAUGE,
        "1 while the policy finds a GPU VM whose vCPUs sit by its GPU but whose memory is mostly off the GPU's node(s) (policy.memory_remote_high): a move to the GPU's node is recommended (numatune, migrate_pages, or a restart under strict numatune; pinsight plan says which).",
    );
    let mut irq_recommended = Family::new(
        "pinsight_irq_move_recommended",
        MetricType::GAUGE,
        "Interrupt lines of a GPU delivered off its node whose affinity the policy would move to the node's CPUs.",
    );
    let mut memory_moves = Family::new(
        "pinsight_memory_moves_total",
        MetricType::COUNTER,
        "Memory fix decisions by outcome (applied, failed, skipped_gone, recommended, skipped_cooldown, waiting_budget, needs_restart).",
    );
    let mut irq_moves = Family::new(
        "pinsight_irq_moves_total",
        MetricType::COUNTER,
        "GPU interrupt affinity fix decisions by outcome (applied, failed, skipped_operator, recommended, skipped_cooldown, skipped_irqbalance).",
    );
    let mut irqbalance = Family::new(
        "pinsight_irqbalance_running",
        MetricType::GAUGE,
        "1 while an irqbalance process runs (read under irq_proc_root): GPU interrupt lines it may move are reported, not moved.",
    );
    let Some(fixes) = &view.fixes else {
        return Vec::new();
    };
    let mut label = |v: &str| bounded_label(v, cut);
    for fix in &fixes.plan.memory {
        memory_recommended.push(vec![("domain", label(&fix.domain))], 1.0);
    }
    for fix in &fixes.plan.irq {
        irq_recommended.push(
            vec![("domain", label(&fix.domain)), ("gpu", label(&fix.gpu))],
            fix.lines.len() as f64,
        );
    }
    for (domain, outcome, n) in &fixes.memory_moves {
        let labels = vec![("domain", label(domain)), ("outcome", outcome.clone())];
        memory_moves.push(labels, *n as f64);
    }
    for (domain, gpu, outcome, n) in &fixes.irq_moves {
        let labels = vec![
            ("domain", label(domain)),
            ("gpu", label(gpu)),
            ("outcome", outcome.clone()),
        ];
        irq_moves.push(labels, *n as f64);
    }
    if let Some(running) = fixes.irqbalance_running {
        irqbalance.push(vec![], f64::from(u8::from(running)));
    }
    vec![
        memory_recommended,
        irq_recommended,
        memory_moves,
        irq_moves,
        irqbalance,
    ]
}
