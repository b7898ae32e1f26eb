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
