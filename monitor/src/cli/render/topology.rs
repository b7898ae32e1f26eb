//! `pinsight topology` as text: sockets with their nodes, GPUs, and each VM's vCPU threads.

use std::fmt::Write as _;

use crate::inventory::{Inventory, LibvirtError};
use crate::topology::Topology;

/// The host's sockets, nodes and GPUs, then the VMs (or why libvirt could not list them).
pub fn topology(topology: &Topology, inventory: Result<&Inventory, &LibvirtError>) -> String {
    let mut out = String::new();
    for (socket, cpus) in topology.sockets() {
        let _ = writeln!(out, "socket {socket}: CPUs {cpus}");
        for node in topology.nodes.values().filter(|n| n.socket == Some(socket)) {
            let _ = writeln!(out, "  node {}: CPUs {}", node.id, node.cpus);
        }
    }
    for node in topology.nodes.values().filter(|n| n.socket.is_none()) {
        let _ = writeln!(out, "node {} (no CPUs: memory only)", node.id);
    }
    if !topology.offline_cpus.is_empty() {
        let _ = writeln!(out, "offline CPUs: {}", topology.offline_cpus);
    }
    let gpus: Vec<_> = topology
        .pci
        .values()
        .filter(|d| d.class.is_some_and(Topology::is_gpu_class))
        .collect();
    let _ = writeln!(out, "GPUs:{}", if gpus.is_empty() { " none" } else { "" });
    for gpu in gpus {
        let node = gpu
            .node
            .map(|n| n.to_string())
            .unwrap_or_else(|| "unknown".into());
        let _ = writeln!(out, "  {} node {node}", gpu.address);
    }
    match inventory {
        Err(e) => {
            let _ = writeln!(out, "VMs: unknown ({e})");
        }
        Ok(inv) => {
            let _ = writeln!(
                out,
                "VMs:{}",
                if inv.vms.is_empty() {
                    " none running"
                } else {
                    ""
                }
            );
            for vm in &inv.vms {
                let gpus: Vec<String> = vm
                    .gpus
                    .iter()
                    .map(|g| {
                        format!(
                            "{} (node {})",
                            g.address,
                            g.node.map(|n| n.to_string()).unwrap_or("?".into())
                        )
                    })
                    .collect();
                let _ = writeln!(
                    out,
                    "  {} pid {} GPUs: {}",
                    vm.name,
                    vm.pid,
                    if gpus.is_empty() {
                        "none".into()
                    } else {
                        gpus.join(", ")
                    }
                );
                for t in &vm.vcpus {
                    let wrong = topology.allows_far_socket(&t.allowed_cpus, &vm.gpu_nodes);
                    let _ = writeln!(
                        out,
                        "    vCPU {} thread {} may run on CPUs {}{}",
                        t.vcpu,
                        t.tid,
                        t.allowed_cpus,
                        if wrong {
                            "  <- includes the far socket"
                        } else {
                            ""
                        }
                    );
                }
                for t in &vm.threads {
                    let _ = writeln!(
                        out,
                        "    {} thread {} ({}) may run on CPUs {}",
                        t.role.as_str(),
                        t.tid,
                        t.name,
                        t.allowed_cpus
                    );
                }
            }
            for p in &inv.problems {
                let _ = writeln!(out, "problem: {p}");
            }
        }
    }
    for w in &topology.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{topo, VmBuilder};

    fn two_sockets() -> Topology {
        topo("two-socket-gpu")
    }

    #[test]
    fn shows_sockets_gpus_and_why_vms_are_unknown() {
        let down = LibvirtError::Connect {
            uri: "qemu:///system".into(),
            message: "no socket".into(),
        };
        assert_eq!(
            topology(&two_sockets(), Err(&down)),
            "socket 0: CPUs 0\n  node 0: CPUs 0\nsocket 1: CPUs 1\n  node 1: CPUs 1\n\
             GPUs:\n  0000:3b:00.0 node 1\n  0000:af:00.0 node 0\n\
             VMs: unknown (cannot connect to libvirt at qemu:///system: no socket)\n"
        );
    }

    #[test]
    fn marks_a_vcpu_that_may_run_on_the_far_socket() {
        let mut vm = VmBuilder::new("gpu-vm")
            .vcpus(&["0-1"])
            .gpu("0000:3b:00.0", 1)
            .threads(&[(42, crate::inventory::ThreadRole::Emulator)])
            .build();
        (vm.pid, vm.vcpus[0].tid) = (42, 43);
        vm.threads[0].allowed_cpus = "0".parse().unwrap();
        let inventory = Inventory {
            vms: vec![vm],
            problems: vec!["domain odd: no pid file".into()],
        };
        let text = topology(&two_sockets(), Ok(&inventory));
        assert!(
            text.ends_with(
                "VMs:\n  gpu-vm pid 42 GPUs: 0000:3b:00.0 (node 1)\n\
                 \x20   vCPU 0 thread 43 may run on CPUs 0-1  <- includes the far socket\n\
                 \x20   emulator thread 42 (emulator) may run on CPUs 0\n\
                 problem: domain odd: no pid file\n"
            ),
            "{text}"
        );
    }
}
