//! Where each VM's memory sits: resident bytes by locality to its GPUs, and the remote share.

use prometheus::proto::MetricType;

use super::text::{bounded_label, Family};
use crate::view::VmView;

/// The memory families of the exported VMs.
pub(super) fn families(vms: &[VmView], cut: &mut u64) -> Vec<Family> {
    let mut bytes = Family::new(
        "pinsight_domain_memory_bytes",
        MetricType::GAUGE,
        "Resident memory of the VM by locality of its NUMA node to the VM's GPUs: its memory cgroup's memory.numa_stat (anon, file and unevictable) plus its hugetlb pages (hugetlb.<size>.numa_stat, kernel >= 5.17); or, for a VM without a readable memory cgroup, /proc/PID/numa_maps read at most every numa_maps_fallback_seconds (see pinsight_domain_memory_source).",
    );
    let mut hugetlb = Family::new(
        "pinsight_domain_memory_hugetlb_bytes",
        MetricType::GAUGE,
        "The hugetlb pages (hugetlbfs-backed guest RAM) among pinsight_domain_memory_bytes, by locality; 0 without hugepages or where the hugetlb controller's numa_stat cannot be read.",
    );
    let mut unknown = Family::new(
        "pinsight_domain_memory_hugetlb_node_unknown_bytes",
        MetricType::GAUGE,
        "Hugetlb pages of the VM (its QEMU's HugetlbPages in /proc/PID/status) that no hugetlb cgroup counts, e.g. on a hybrid cgroup host where the controller sits on the v2 tree and libvirt does not enable it: on nodes unknown, so not in pinsight_domain_memory_bytes. numa_maps_fallback_seconds > 0 places them from the VM's numa_maps (source cgroup+numa_maps).",
    );
    let mut source = Family::new(
        "pinsight_domain_memory_source",
        MetricType::GAUGE,
        "1 for where the VM's memory figures come from: cgroup (its cgroups' counters, every placement_read_seconds), numa_maps (the slow fallback, a page-table walk at most every numa_maps_fallback_seconds) or cgroup+numa_maps (the counters, and the nodes of the hugetlb pages no cgroup counts from such a walk of the huge mappings).",
    );
    let mut ratio = Family::new(
        "pinsight_domain_memory_remote_ratio",
        MetricType::GAUGE,
        "Share (0..1) of the VM's resident memory on another socket than its GPUs.",
    );
    for vm in vms {
        let Some(memory) = &vm.memory else { continue };
        let domain = bounded_label(&vm.domain, cut);
        let labels = |locality: crate::topology::Locality| {
            vec![
                ("domain", domain.clone()),
                ("locality", locality.as_str().to_string()),
            ]
        };
        for (locality, b) in memory.by_locality.iter() {
            bytes.push(labels(locality), b as f64);
            let huge = memory.hugetlb_by_locality.get(locality);
            hugetlb.push(labels(locality), huge as f64);
        }
        unknown.push(
            vec![("domain", domain.clone())],
            memory.hugetlb_node_unknown as f64,
        );
        source.push(
            vec![
                ("domain", domain.clone()),
                ("source", memory.source.clone()),
            ],
            1.0,
        );
        if let Some(r) = memory.remote_ratio {
            ratio.push(vec![("domain", domain)], r);
        }
    }
    vec![bytes, hugetlb, unknown, ratio, source]
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
