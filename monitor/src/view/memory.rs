//! A VM's memory in the view: its resident bytes per NUMA node, by locality to its GPUs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::accounting::ByLocality;
use crate::inventory::Vm;
use crate::memory::Resident;
use crate::topology::{Locality, Topology};

/// Where a VM's memory sits.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryView {
    /// Resident bytes per NUMA node (its memory cgroup's count).
    pub by_node: BTreeMap<u32, u64>,
    /// The same by locality to the VM's GPUs.
    pub by_locality: ByLocality<u64>,
    /// Share of the bytes on another socket than the GPUs; `None` without GPU or memory.
    pub remote_ratio: Option<f64>,
    /// The hugetlb pages among them, by locality.
    #[serde(default)]
    pub hugetlb_by_locality: ByLocality<u64>,
    /// Hugetlb bytes of the VM that no hugetlb cgroup counts and no numa_maps walk placed:
    /// on nodes unknown, so in none of the figures above.
    #[serde(default)]
    pub hugetlb_node_unknown: u64,
    /// Where the figures come from: "cgroup" (every `placement_read_seconds`), "numa_maps"
    /// (the slow fallback, at most every numa_maps_fallback_seconds) or "cgroup+numa_maps"
    /// (hugetlb pages no cgroup counts placed by the fallback).
    #[serde(default)]
    pub source: String,
}

/// The locality of memory on `node` to GPUs on `gpu_nodes`.
pub fn node_locality(topology: &Topology, node: u32, gpu_nodes: &[u32]) -> Locality {
    if gpu_nodes.is_empty() || !topology.nodes.contains_key(&node) {
        return Locality::None;
    }
    if gpu_nodes.contains(&node) {
        return Locality::Local;
    }
    let socket = topology.socket_of_node(node);
    let near = gpu_nodes
        .iter()
        .any(|g| socket.is_some() && topology.socket_of_node(*g) == socket);
    if near {
        Locality::SameSocket
    } else {
        Locality::Remote
    }
}

/// The memory view of `vm` from its resident bytes per node.
pub fn memory_view(vm: &Vm, topology: &Topology, resident: &Resident) -> MemoryView {
    let by_locality = |bytes: &BTreeMap<u32, u64>| {
        let mut sum = ByLocality::<u64>::default();
        for (&node, &b) in bytes {
            *sum.get_mut(node_locality(topology, node, &vm.gpu_nodes)) += b;
        }
        sum
    };
    let all = by_locality(&resident.by_node);
    let total: u64 = resident.by_node.values().sum();
    let remote_ratio =
        (!vm.gpu_nodes.is_empty() && total > 0).then(|| all.remote as f64 / total as f64);
    MemoryView {
        by_node: resident.by_node.clone(),
        by_locality: all,
        remote_ratio,
        hugetlb_by_locality: by_locality(&resident.hugetlb_by_node),
        hugetlb_node_unknown: resident.hugetlb_node_unknown,
        source: resident.source.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{topo, VmBuilder};

    #[test]
    fn memory_on_the_other_socket_is_remote_and_on_the_gpus_node_local() {
        let topology = topo("two-socket-gpu");
        let bytes = Resident {
            by_node: BTreeMap::from([(0, 300), (1, 100)]),
            hugetlb_by_node: BTreeMap::from([(1, 64)]),
            ..Default::default()
        };
        let far = VmBuilder::new("vm").gpu("0000:3b:00.0", 1).build();
        let v = memory_view(&far, &topology, &bytes);
        assert_eq!((v.by_locality.local, v.by_locality.remote), (100, 300));
        assert_eq!(v.remote_ratio, Some(0.75));
        assert_eq!(v.hugetlb_by_locality.local, 64);
        assert_eq!(v.source, "cgroup");
        let near = VmBuilder::new("vm").gpu("0000:3b:00.0", 0).build();
        assert_eq!(
            memory_view(&near, &topology, &bytes).remote_ratio,
            Some(0.25)
        );
        // No GPU: no ratio, everything under none.
        let plain = VmBuilder::new("vm").build();
        let v = memory_view(&plain, &topology, &bytes);
        assert_eq!((v.remote_ratio, v.by_locality.none), (None, 400));
    }

    #[test]
    fn a_node_the_topology_does_not_know_is_none() {
        let topology = topo("two-socket-gpu");
        assert_eq!(node_locality(&topology, 7, &[1]), Locality::None);
        assert_eq!(node_locality(&topology, 0, &[1]), Locality::Remote);
    }
}
