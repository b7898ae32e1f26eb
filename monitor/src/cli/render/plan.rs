//! `pinsight plan` as text: the policy's plan, and the undo record of `plan --undo`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::cpuset::CpuSet;
use crate::policy::record::{describe, utc, Record};
use crate::policy::{Plan, Verdict};

/// One block per VM with GPUs: verdict, reason, and each vCPU's before -> after.
pub fn plan(plan: &Plan) -> String {
    let mut out = String::new();
    if plan.decisions.is_empty() {
        let _ = writeln!(out, "no running VM has a GPU: nothing to place");
    }
    for d in &plan.decisions {
        let verdict = match d.verdict {
            Verdict::Repin => "REPIN",
            other => other.as_str(),
        };
        let _ = writeln!(
            out,
            "{}  (GPU nodes {})  {verdict}",
            d.domain,
            d.gpu_nodes
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        let _ = writeln!(out, "  why: {}", d.reason);
        for m in &d.vcpus {
            let after = m.after.as_ref().map_or("-".to_string(), |a| a.to_string());
            let _ = writeln!(
                out,
                "  vCPU {:>3}: {} -> {after}  ({})",
                m.vcpu, m.before, m.trigger
            );
        }
        if let Some(e) = &d.emulator {
            let _ = writeln!(out, "  emulator: {} -> {}", e.before, e.after);
        }
    }
    out
}

/// `pinsight plan --undo`: the pins pinsight found before it first acted, beside today's.
pub fn undo(domain: &str, record: &Record, current: &BTreeMap<u32, CpuSet>) -> String {
    let mut out = String::new();
    let Some(original) = &record.original else {
        let _ = writeln!(
            out,
            "{domain}: nothing to undo (pinsight has not changed its pins, or they were restored)"
        );
        if let Some(last) = &record.last {
            let _ = writeln!(out, "  last action: {}", describe(last));
        }
        return out;
    };
    let _ = writeln!(
        out,
        "{domain}: `pinsight restore {domain}` would put back the pins from before pinsight's \
         first action ({}):",
        utc(original.time)
    );
    for (vcpu, cpus) in &original.vcpus {
        let now = current.get(vcpu).map_or("?".to_string(), |c| c.to_string());
        let _ = writeln!(out, "  vCPU {vcpu:>3}: now {now} -> {cpus}");
    }
    if let Some(cpus) = &original.emulator {
        let _ = writeln!(out, "  emulator: -> {cpus}");
    }
    if let Some(last) = &record.last {
        let _ = writeln!(out, "  last action: {}", describe(last));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::record::{Action, ActionKind, ActionResult, Pins};

    #[test]
    fn undo_shows_the_original_pins_beside_todays() {
        let cpus = |s: &str| s.parse::<CpuSet>().unwrap();
        let mut record = Record::default();
        assert!(undo("vm", &record, &BTreeMap::new()).starts_with("vm: nothing to undo"));
        record.original = Some(Pins {
            time: 0.0,
            vcpus: BTreeMap::from([(0, cpus("0-1")), (1, cpus("0-1"))]),
            emulator: Some(cpus("0-1")),
        });
        record.last = Some(Action {
            time: 60.0,
            action: ActionKind::Repin,
            result: ActionResult::Applied,
            reason: "far socket".into(),
            vcpus: BTreeMap::from([(0, (cpus("0-1"), cpus("1")))]),
            emulator: None,
        });
        let current = BTreeMap::from([(0, cpus("1"))]);
        assert_eq!(
            undo("vm", &record, &current),
            "vm: `pinsight restore vm` would put back the pins from before pinsight's first \
             action (1970-01-01T00:00:00Z):\n  vCPU   0: now 1 -> 0-1\n  vCPU   1: now ? -> 0-1\n\
             \x20 emulator: -> 0-1\n  last action: 1970-01-01T00:01:00Z repin applied: \
             vCPU 0 0-1 -> 1 (far socket)\n"
        );
    }

    #[test]
    fn an_empty_plan_says_there_is_nothing_to_place() {
        assert_eq!(
            plan(&Plan::default()),
            "no running VM has a GPU: nothing to place\n"
        );
    }
}
