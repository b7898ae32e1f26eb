//! `pinsight status` as text: the daemon's published [`HostView`], per VM and vCPU.

use std::fmt::Write as _;

use super::{moves, MOVES_HEADER};
use crate::inventory::ThreadRole;
use crate::view::HostView;

fn pct(x: f64) -> String {
    format!("{:5.1}%", x * 100.0)
}

fn ratio(r: Option<f64>) -> String {
    r.map(pct).unwrap_or_else(|| "   n/a".into())
}

/// Bytes in MiB, for display.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

/// The text of `pinsight status`.
pub fn status(host: &HostView) -> String {
    let mut out = String::new();
    let probes: Vec<String> = host
        .probes
        .probes
        .iter()
        .map(|(p, st)| format!("{p}={}", if st.attached { "attached" } else { "off" }))
        .collect();
    let _ = writeln!(
        out,
        "pinsight {}  libvirt {}  probes: {}  policy: {}",
        host.version,
        if host.libvirt_up { "up" } else { "DOWN" },
        probes.join(" "),
        host.mode.as_str()
    );
    if host.vms.is_empty() {
        let _ = writeln!(out, "no running VMs");
    }
    for vm in &host.vms {
        let _ = writeln!(
            out,
            "\n{}  ({})  remote now {}",
            vm.domain,
            vm.gpu_list().unwrap_or_else(|| "no GPU".into()),
            ratio(vm.remote_ratio)
        );
        let _ = writeln!(
            out,
            "  {:>4} {:>8} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7}  {}",
            "vcpu", "tid", "allowed", "run s", "local", "same", "remote", "now", MOVES_HEADER
        );
        for v in &vm.vcpus {
            let flag = if v.allowed_on_far_socket { " !" } else { "" };
            let shares = v.run_seconds.shares();
            let tid = v.tid.map_or("-".to_string(), |t| t.to_string());
            let _ = writeln!(
                out,
                "  {:>4} {:>8} {:>10} {:>9.1} {} {} {} {}  {}{flag}",
                v.vcpu,
                tid,
                v.allowed_cpus.to_string(),
                v.run_seconds.total(),
                pct(shares.local),
                pct(shares.same_socket),
                pct(shares.remote),
                ratio(v.remote_ratio),
                moves(&v.migrations)
            );
        }
        for role in vm.threads.iter().filter(|r| r.role != ThreadRole::Vcpu) {
            let shares = role.run_seconds.shares();
            let names = if role.names.is_empty() {
                "none".to_string()
            } else {
                role.names.join(", ")
            };
            let _ = writeln!(
                out,
                "  {:<9} {:>2} thread(s) {:>9.1} s  local {} same {} remote {}  ({names})",
                role.role.as_str(),
                role.threads,
                role.run_seconds.total(),
                pct(shares.local),
                pct(shares.same_socket),
                pct(shares.remote),
            );
        }
        if let Some(m) = &vm.memory {
            let nodes: Vec<String> = m
                .by_node
                .iter()
                .map(|(n, b)| format!("node {n} {:.0} MiB", mib(*b)))
                .collect();
            let huge = m.hugetlb_by_locality.total();
            let _ = writeln!(
                out,
                "  memory: {}  remote {}{}{}",
                nodes.join(", "),
                ratio(m.remote_ratio),
                if huge > 0 {
                    format!("  (hugetlb {:.0} MiB)", mib(huge))
                } else {
                    String::new()
                },
                match m.source.as_str() {
                    "numa_maps" => "  (from numa_maps: the memory cgroup is unreadable)",
                    "cgroup+numa_maps" => "  (hugetlb nodes from numa_maps: no hugetlb cgroup)",
                    _ => "",
                }
            );
            if m.hugetlb_node_unknown > 0 {
                let _ = writeln!(
                    out,
                    "  memory: + hugetlb {:.0} MiB on nodes unknown: no hugetlb cgroup counts \
                     them (set numa_maps_fallback_seconds to place them)",
                    mib(m.hugetlb_node_unknown)
                );
            }
        }
        for g in &vm.gpu_interrupts {
            let off: Vec<String> = g
                .lines
                .iter()
                .filter(|l| l.misplaced)
                .map(|l| {
                    format!(
                        "IRQ {} -> CPU {}",
                        l.irq,
                        l.delivered_to.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            let handled = g.handled.total();
            let _ = writeln!(
                out,
                "  GPU {} interrupts: {} lines, {} handled, {} on a remote socket{}",
                g.gpu,
                g.lines.len(),
                handled,
                g.handled.remote,
                if off.is_empty() {
                    String::new()
                } else {
                    format!("; delivered off the GPU's node: {}", off.join(", "))
                }
            );
        }
        if let Some(p) = &vm.policy {
            let _ = writeln!(out, "  policy: {}: {}", p.verdict.as_str(), p.reason);
        }
        if let Some(a) = &vm.last_action {
            let _ = writeln!(out, "  last action: {a}");
        }
    }
    if host
        .vms
        .iter()
        .any(|vm| vm.vcpus.iter().any(|v| v.allowed_on_far_socket))
    {
        let _ = writeln!(
            out,
            "\n! = allowed to run on a socket without the VM's GPUs"
        );
    }
    for p in &host.problems {
        let _ = writeln!(out, "problem: {p}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Mode;
    use crate::test_support::{topo, view_inputs, VmBuilder};
    use crate::view::{PolicyView, ViewInputs};

    fn view_of(vm: crate::inventory::Vm) -> HostView {
        let inventory = crate::inventory::Inventory {
            vms: vec![vm],
            problems: Vec::new(),
        };
        let (topology, totals) = (topo("two-socket-gpu"), Default::default());
        HostView::build(ViewInputs {
            mode: Mode::Enforce,
            ..view_inputs(&topology, &inventory, &totals)
        })
    }

    #[test]
    fn shows_the_mode_the_verdict_and_the_last_action() {
        let state = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last time=\"1764055200\" \
                     action=\"repin\" result=\"applied\" reason=\"why\"><p:vcpu id=\"0\" \
                     before=\"0\" after=\"1\"/></p:last></p:state>";
        let mut view = view_of(
            VmBuilder::new("vm")
                .vcpus(&["0-1"])
                .gpu("0000:3b:00.0", 1)
                .state(state)
                .build(),
        );
        assert_eq!(
            view.vms[0].last_action.as_deref(),
            Some("2025-11-25T07:20:00Z repin applied: vCPU 0 0 -> 1 (why)")
        );
        view.vms[0].policy = Some(PolicyView {
            verdict: crate::policy::Verdict::Placed,
            reason: "nothing to do".into(),
        });
        let text = status(&view);
        assert!(text.contains("policy: enforce"), "{text}");
        assert!(text.contains("  policy: ok: nothing to do\n"), "{text}");
        assert!(
            text.contains("  last action: 2025-11-25T07:20:00Z repin applied"),
            "{text}"
        );
        assert!(text.contains("(0000:3b:00.0@node1)"), "{text}");
        // CPU 0 is on the far socket of the two-socket fixture.
        assert!(text.contains(" !\n"), "{text}");
        let bad = view_of(
            VmBuilder::new("vm")
                .state("<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last/></p:state>")
                .build(),
        );
        assert!(bad.vms[0]
            .last_action
            .as_deref()
            .unwrap()
            .starts_with("unreadable: "));
    }
}
