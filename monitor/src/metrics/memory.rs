//! Where each VM's memory sits: resident bytes by locality to its GPUs, and the remote share.

use prometheus::proto::MetricType;

use super::{bounded_label, Family};
use crate::view::VmView;

/// The memory families of the exported VMs.
pub(super) fn families(vms: &[VmView], cut: &mut u64) -> Vec<Family> {
    let mut bytes = Family::new(
        "pinsight_domain_memory_bytes",
        MetricType::GAUGE,
        "Resident memory of the VM's memory cgroup (memory.numa_stat: anon, file and unevictable; hugetlb pages not included) by locality of its NUMA node to the VM's GPUs.",
    );
    let mut ratio = Family::new(
        "pinsight_domain_memory_remote_ratio",
        MetricType::GAUGE,
        "Share (0..1) of the VM's resident memory on another socket than its GPUs.",
    );
    for vm in vms {
        let Some(memory) = &vm.memory else { continue };
        let domain = bounded_label(&vm.domain, cut);
        for (locality, b) in memory.by_locality.iter() {
            bytes.push(
                vec![
                    ("domain", domain.clone()),
                    ("locality", locality.as_str().to_string()),
                ],
                b as f64,
            );
        }
        if let Some(r) = memory.remote_ratio {
            ratio.push(vec![("domain", domain)], r);
        }
    }
    vec![bytes, ratio]
}

/// The node-to-node memory figures of `pinsight calibrate`, when the daemon has them.
pub(super) fn calibration_families(view: &crate::view::HostView) -> Vec<Family> {
    let mut latency = Family::new(
        "pinsight_node_memory_latency_ratio",
        MetricType::GAUGE,
        "Memory latency of a thread on node `from` reading memory on node `to`, over the same on its own node (pinsight calibrate: a pointer chase; 1 on the node itself).",
    );
    let mut bandwidth = Family::new(
        "pinsight_node_memory_bandwidth_ratio",
        MetricType::GAUGE,
        "Sequential read bandwidth of a thread on node `from` from memory on node `to`, over the same on its own node (pinsight calibrate; 1 on the node itself).",
    );
    let mut measured = Family::new(
        "pinsight_calibration_timestamp_seconds",
        MetricType::GAUGE,
        "When pinsight calibrate measured the node figures (Unix time).",
    );
    if let Some(c) = &view.calibration {
        measured.push(vec![], c.measured_unix_seconds);
        for r in c.ratios() {
            let labels = || vec![("from", r.from.to_string()), ("to", r.to.to_string())];
            latency.push(labels(), r.latency_ratio);
            bandwidth.push(labels(), r.bandwidth_ratio);
        }
    }
    vec![latency, bandwidth, measured]
}
