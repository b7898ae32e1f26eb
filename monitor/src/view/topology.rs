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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::topo;

    #[test]
    fn smt_siblings_share_a_core_and_gpus_sit_on_their_node() {
        let view = TopologyView::of(&topo("two-socket-smt"));
        assert_eq!(view.sockets.len(), 2);
        let node1 = &view.sockets[1].nodes[0];
        assert_eq!(node1.id, 1);
        assert_eq!(
            node1.cores,
            vec![vec![4, 12], vec![5, 13], vec![6, 14], vec![7, 15]]
        );
        assert_eq!(node1.gpus, vec!["0000:3b:00.0".to_string()]);
        assert!(view.sockets[0].nodes[0].gpus.is_empty());
        assert!(view.other_nodes.is_empty());
    }

    #[test]
    fn memory_only_nodes_and_offline_cpus_are_kept() {
        let snc = TopologyView::of(&topo("snc"));
        let nodes: Vec<Vec<u32>> = snc
            .sockets
            .iter()
            .map(|s| s.nodes.iter().map(|n| n.id).collect())
            .collect();
        assert_eq!(nodes, vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(snc.other_nodes.len(), 1);
        assert_eq!(snc.other_nodes[0].id, 4);
        assert!(snc.other_nodes[0].cores.is_empty());
        let offline = TopologyView::of(&topo("offline-cpu"));
        assert_eq!(offline.offline_cpus.to_string(), "3");
    }
}
