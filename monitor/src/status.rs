//! The per-VM, per-vCPU view a person reads: built by the daemon, served as /status.json,
//! printed by `pinsight status`.

use serde::{Deserialize, Serialize};

use crate::accounting::{remote_share, DomainTotals};
use crate::inventory::Vm;
use crate::topology::{Locality, Topology};

/// Shares of run time by locality (0..1), cumulative since pinsight started watching.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Shares {
    /// On a GPU's node.
    pub local: f64,
    /// Another node of a GPU's socket.
    pub same_socket: f64,
    /// Another socket.
    pub remote: f64,
    /// No GPU, or CPU unknown to the topology.
    pub none: f64,
}

impl Shares {
    fn of(run: &[f64; 4]) -> Shares {
        let total: f64 = run.iter().sum();
        let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
        Shares {
            local: share(run[0]),
            same_socket: share(run[1]),
            remote: share(run[2]),
            none: share(run[3]),
        }
    }
}

/// One vCPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VcpuStatus {
    /// vCPU index.
    pub vcpu: u32,
    /// Host thread id.
    pub tid: u32,
    /// CPUs it may run on.
    pub allowed_cpus: String,
    /// Whether it may run on a socket that holds none of the VM's GPUs.
    pub allowed_on_wrong_socket: bool,
    /// Seconds on CPU since tracked.
    pub run_seconds: f64,
    /// Shares of that time by locality.
    pub shares: Shares,
    /// Remote share over the recent window.
    pub remote_ratio: Option<f64>,
    /// Cross-socket moves.
    pub cross_socket_migrations: u64,
}

/// One VM.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VmStatus {
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// GPU addresses with their nodes ("0000:3b:00.0@node1").
    pub gpus: Vec<String>,
    /// NUMA nodes of the GPUs.
    pub gpu_nodes: Vec<u32>,
    /// Seconds on CPU, all vCPUs.
    pub run_seconds: f64,
    /// Shares by locality, all vCPUs.
    pub shares: Shares,
    /// Remote share over the recent window.
    pub remote_ratio: Option<f64>,
    /// Per vCPU.
    pub vcpus: Vec<VcpuStatus>,
    /// The repin policy's verdict now ("repin: ...", "skipped_optout: ..."), when evaluated.
    #[serde(default)]
    pub policy: Option<String>,
    /// pinsight's last action on this VM, from its state metadata.
    #[serde(default)]
    pub last_action: Option<String>,
}

/// The whole host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct HostStatus {
    /// pinsight version.
    pub version: String,
    /// Whether libvirt answered the last scan.
    pub libvirt_up: bool,
    /// Probe -> attached.
    pub probes: std::collections::BTreeMap<String, bool>,
    /// VMs, by name.
    pub vms: Vec<VmStatus>,
    /// Problems found in the last scan.
    pub problems: Vec<String>,
    /// The repin policy's mode (observe, recommend, enforce).
    #[serde(default)]
    pub mode: String,
}

/// Whether a thread allowed on `allowed` may run on a socket without any of the GPUs.
pub fn allowed_on_wrong_socket(
    topology: &Topology,
    allowed: &crate::cpuset::CpuSet,
    gpu_nodes: &[u32],
) -> bool {
    !gpu_nodes.is_empty()
        && allowed
            .iter()
            .any(|cpu| topology.locality(cpu, gpu_nodes) == Locality::Remote)
}

/// The status of one VM from its inventory entry and accounting totals.
pub fn vm_status(vm: &Vm, totals: Option<&DomainTotals>, topology: &Topology) -> VmStatus {
    let empty = DomainTotals::default();
    let totals = totals.unwrap_or(&empty);
    let run = totals.run_seconds();
    let vcpus = vm
        .vcpus
        .iter()
        .map(|t| {
            let v = totals.vcpus.get(&t.vcpu).cloned().unwrap_or_default();
            VcpuStatus {
                vcpu: t.vcpu,
                tid: t.tid,
                allowed_cpus: t.allowed_cpus.to_string(),
                allowed_on_wrong_socket: allowed_on_wrong_socket(
                    topology,
                    &t.allowed_cpus,
                    &vm.gpu_nodes,
                ),
                run_seconds: v.run_seconds.iter().sum(),
                shares: Shares::of(&v.run_seconds),
                remote_ratio: v.remote_ratio,
                cross_socket_migrations: v.cross_socket_migrations,
            }
        })
        .collect();
    VmStatus {
        domain: vm.name.clone(),
        uuid: vm.uuid.clone(),
        gpus: vm
            .gpus
            .iter()
            .map(|g| match g.node {
                Some(n) => format!("{}@node{n}", g.address),
                None => format!("{}@node?", g.address),
            })
            .collect(),
        gpu_nodes: vm.gpu_nodes.clone(),
        run_seconds: run.iter().sum(),
        shares: Shares::of(&run),
        remote_ratio: totals
            .remote_ratio
            .or_else(|| (!vm.gpu_nodes.is_empty()).then(|| remote_share(&run).unwrap_or(0.0))),
        vcpus,
        policy: None,
        last_action: last_action(vm),
    }
}

/// pinsight's last action on `vm` in one line, or what is wrong with its record.
fn last_action(vm: &Vm) -> Option<String> {
    let xml = vm.spec.state.as_deref()?;
    match crate::policy::record::Record::parse(xml) {
        Ok(record) => record.last.as_ref().map(crate::policy::record::describe),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

fn pct(x: f64) -> String {
    format!("{:5.1}%", x * 100.0)
}

/// The terminal rendering of `pinsight status`.
pub fn render_text(host: &HostStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let probes: Vec<String> = host
        .probes
        .iter()
        .map(|(p, on)| format!("{p}={}", if *on { "attached" } else { "off" }))
        .collect();
    let mode = if host.mode.is_empty() {
        String::new()
    } else {
        format!("  policy: {}", host.mode)
    };
    let _ = writeln!(
        out,
        "pinsight {}  libvirt {}  probes: {}{mode}",
        host.version,
        if host.libvirt_up { "up" } else { "DOWN" },
        probes.join(" ")
    );
    if host.vms.is_empty() {
        let _ = writeln!(out, "no running VMs");
    }
    for vm in &host.vms {
        let ratio = vm.remote_ratio.map(pct).unwrap_or_else(|| "   n/a".into());
        let gpus = if vm.gpus.is_empty() {
            "no GPU".to_string()
        } else {
            vm.gpus.join(", ")
        };
        let _ = writeln!(out, "\n{}  ({gpus})  remote now {ratio}", vm.domain);
        let _ = writeln!(
            out,
            "  {:>4} {:>8} {:>10} {:>9} {:>7} {:>7} {:>7} {:>7} {:>10}",
            "vcpu", "tid", "allowed", "run s", "local", "same", "remote", "now", "migrations"
        );
        for v in &vm.vcpus {
            let flag = if v.allowed_on_wrong_socket { " !" } else { "" };
            let _ = writeln!(
                out,
                "  {:>4} {:>8} {:>10} {:>9.1} {} {} {} {} {:>10}{flag}",
                v.vcpu,
                v.tid,
                v.allowed_cpus,
                v.run_seconds,
                pct(v.shares.local),
                pct(v.shares.same_socket),
                pct(v.shares.remote),
                v.remote_ratio.map(pct).unwrap_or_else(|| "   n/a".into()),
                v.cross_socket_migrations
            );
        }
        if let Some(p) = &vm.policy {
            let _ = writeln!(out, "  policy: {p}");
        }
        if let Some(a) = &vm.last_action {
            let _ = writeln!(out, "  last action: {a}");
        }
    }
    if host
        .vms
        .iter()
        .any(|vm| vm.vcpus.iter().any(|v| v.allowed_on_wrong_socket))
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
    use crate::inventory::domain_xml::parse_domain_xml;

    fn vm_with_state(state: &str) -> Vm {
        let xml =
            format!("<domain><name>vm</name><uuid>u</uuid><metadata>{state}</metadata></domain>");
        Vm {
            name: "vm".into(),
            uuid: "u".into(),
            pid: 1,
            vcpus: Vec::new(),
            gpus: Vec::new(),
            gpu_nodes: vec![1],
            spec: parse_domain_xml(&xml).unwrap(),
        }
    }

    #[test]
    fn shows_the_mode_the_verdict_and_the_last_action() {
        let state = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last time=\"1764055200\" \
                     action=\"repin\" result=\"applied\" reason=\"why\"><p:vcpu id=\"0\" \
                     before=\"0\" after=\"1\"/></p:last></p:state>";
        let topology = Topology {
            cpus: Default::default(),
            nodes: Default::default(),
            pci: Default::default(),
            offline_cpus: Default::default(),
            possible_cpus: Default::default(),
            warnings: Vec::new(),
        };
        let mut vm = vm_status(&vm_with_state(state), None, &topology);
        assert_eq!(
            vm.last_action.as_deref(),
            Some("2025-11-25T07:20:00Z repin applied: vCPU 0 0 -> 1 (why)")
        );
        vm.policy = Some("ok: nothing to do".into());
        let text = render_text(&HostStatus {
            mode: "enforce".into(),
            vms: vec![vm],
            ..Default::default()
        });
        assert!(text.contains("policy: enforce"), "{text}");
        assert!(text.contains("  policy: ok: nothing to do\n"), "{text}");
        assert!(
            text.contains("  last action: 2025-11-25T07:20:00Z repin applied"),
            "{text}"
        );
        let bad = vm_status(
            &vm_with_state("<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last/></p:state>"),
            None,
            &topology,
        );
        assert!(bad.last_action.unwrap().starts_with("unreadable: "));
    }
}
