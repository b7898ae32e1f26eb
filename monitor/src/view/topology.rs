//! The host's shape as the placement map at `/` draws it: sockets holding NUMA nodes holding
//! SMT cores, the GPUs on their nodes, and the CPUs that are offline or reserved.

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::topology::Topology;

/// The host's sockets, nodes, cores and GPUs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TopologyView {
    /// Sockets by id.
    pub sockets: Vec<SocketView>,
    /// Nodes without a socket of their own (memory-only, or one node spanning sockets).
    pub other_nodes: Vec<NodeView>,
    /// Possible CPUs that are not online.
    pub offline_cpus: CpuSet,
    /// CPUs the policy never places vCPUs on (`policy.reserved_cpus`).
    pub reserved_cpus: CpuSet,
}

/// One socket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketView {
    /// Physical package id.
    pub id: u32,
    /// Its NUMA nodes by id.
    pub nodes: Vec<NodeView>,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    /// Node id.
    pub id: u32,
    /// Its cores, each the CPU ids of its SMT siblings, ascending; empty for memory only.
    pub cores: Vec<Vec<u32>>,
    /// PCI addresses of the GPUs (and accelerators) on the node.
    pub gpus: Vec<String>,
}

impl TopologyView {
    /// The shape of `topology`; `reserved_cpus` is empty until the caller sets it.
    pub fn of(topology: &Topology) -> TopologyView {
        let node_view = |id: u32| {
            let mut cores: Vec<Vec<u32>> = Vec::new();
            for cpu in topology.cpus.values().filter(|c| c.node == id) {
                // Siblings on another node (never on real hardware) would be drawn twice.
                let core: Vec<u32> = cpu
                    .siblings
                    .iter()
                    .filter(|s| topology.cpus.get(s).is_some_and(|c| c.node == id))
                    .collect();
                if !cores.contains(&core) {
                    cores.push(core);
                }
            }
            NodeView {
                id,
                cores,
                gpus: topology
                    .gpus()
                    .filter(|g| g.node == Some(id))
                    .map(|g| g.address.clone())
                    .collect(),
            }
        };
        let mut sockets: Vec<SocketView> = topology
            .sockets()
            .into_keys()
            .map(|id| SocketView { id, nodes: vec![] })
            .collect();
        let mut other_nodes = Vec::new();
        for node in topology.nodes.values() {
            match sockets.iter_mut().find(|s| Some(s.id) == node.socket) {
                Some(socket) => socket.nodes.push(node_view(node.id)),
                None => other_nodes.push(node_view(node.id)),
            }
        }
        TopologyView {
            sockets,
            other_nodes,
            offline_cpus: topology.offline_cpus.clone(),
            reserved_cpus: CpuSet::new(),
        }
    }
}
