//! Terminal reports: `pinsight topology` and the client side of `pinsight status`.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde::Serialize;

use crate::inventory::Inventory;
use crate::status::{allowed_on_wrong_socket, HostStatus};
use crate::topology::Topology;

/// What `pinsight topology --json` prints.
#[derive(Debug, Serialize)]
pub struct TopologyReport<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// VMs, or None when libvirt was not reachable.
    pub inventory: Option<&'a Inventory>,
    /// Why libvirt was not reachable.
    pub libvirt_error: Option<String>,
}

/// The text form of `pinsight topology`.
pub fn render_topology(topology: &Topology, inventory: Result<&Inventory, String>) -> String {
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
                    let wrong = allowed_on_wrong_socket(topology, &t.allowed_cpus, &vm.gpu_nodes);
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

/// Fetches /status.json from a running daemon at `addr` ("host:port").
pub fn fetch_status(addr: &str) -> Result<HostStatus, String> {
    let fail = |e: &dyn std::fmt::Display| {
        format!("cannot reach the pinsight daemon at {addr}: {e} (is `pinsight run` running? use --addr)")
    };
    let mut stream = TcpStream::connect(addr).map_err(|e| fail(&e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| fail(&e))?;
    write!(
        stream,
        "GET /status.json HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| fail(&e))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| fail(&e))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| fail(&"malformed HTTP response"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(fail(&head.lines().next().unwrap_or("")));
    }
    serde_json::from_str(body).map_err(|e| fail(&format!("unexpected /status.json: {e}")))
}
