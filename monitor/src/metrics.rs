//! The Prometheus exposition: every family pinsight exports, rendered from one snapshot.
//!
//! The daemon builds a [`Snapshot`] once per tick; a scrape only renders it, so scrapes never
//! touch the probes' maps or libvirt, and VMs that are gone simply have no series.

use std::collections::BTreeMap;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};

use crate::accounting::{remote_share, DomainTotals};
use crate::inventory::Vm;
use crate::topology::Locality;

/// Descriptive labels of one VM, for `pinsight_domain_info`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct VmLabels {
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// Comma-separated GPU PCI addresses.
    pub gpus: String,
    /// Comma-separated NUMA nodes of the GPUs.
    pub gpu_nodes: String,
    /// Nova instance name, if Nova manages the VM.
    pub nova_instance: String,
    /// Nova project name.
    pub nova_project: String,
}

impl VmLabels {
    /// The labels of a VM from the inventory.
    pub fn from_vm(vm: &Vm) -> VmLabels {
        let join = |items: Vec<String>| items.join(",");
        let nova = vm.spec.nova.as_ref();
        VmLabels {
            domain: vm.name.clone(),
            uuid: vm.uuid.clone(),
            gpus: join(vm.gpus.iter().map(|g| g.address.clone()).collect()),
            gpu_nodes: join(vm.gpu_nodes.iter().map(|n| n.to_string()).collect()),
            nova_instance: nova
                .and_then(|n| n.instance_name.clone())
                .unwrap_or_default(),
            nova_project: nova
                .and_then(|n| n.project_name.clone())
                .unwrap_or_default(),
        }
    }
}

/// Everything one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Running VMs.
    pub vms: Vec<VmLabels>,
    /// Accounting totals per domain.
    pub totals: BTreeMap<String, DomainTotals>,
    /// Probe name -> attached.
    pub probes: BTreeMap<String, bool>,
    /// Whether the last libvirt scan succeeded.
    pub libvirt_up: bool,
    /// Per program (run time ns, runs), when bpf_stats is on.
    pub program_stats: Option<Vec<(String, u64, u64)>>,
    /// Per map (entries, capacity).
    pub maps: Vec<(String, u64, u64)>,
    /// Failed map updates in the probes.
    pub map_errors: u64,
    /// Penalty factor for the overhead estimate.
    pub cross_socket_penalty: f64,
    /// Whether per-vCPU families are exported.
    pub per_vcpu: bool,
    /// Repins by (domain, result).
    pub repins: BTreeMap<(String, String), u64>,
    /// Recommended repins by (domain, vcpu) -> 0/1.
    pub recommended: BTreeMap<(String, u32), bool>,
    /// Duration of the previous render.
    pub scrape_duration_seconds: f64,
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, kind: MetricType, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    fn push(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn into_proto(self) -> MetricFamily {
        let mut family = MetricFamily::default();
        family.set_name(self.name.to_string());
        family.set_help(self.help.to_string());
        family.set_field_type(self.kind);
        for (labels, value) in self.samples {
            let mut metric = Metric::default();
            metric.set_label(
                labels
                    .into_iter()
                    .map(|(k, v)| {
                        let mut pair = LabelPair::default();
                        pair.set_name(k.to_string());
                        pair.set_value(v);
                        pair
                    })
                    .collect(),
            );
            if self.kind == MetricType::COUNTER {
                let mut c = Counter::default();
                c.set_value(value);
                metric.set_counter(c);
            } else {
                let mut g = Gauge::default();
                g.set_value(value);
                metric.set_gauge(g);
            }
            family.mut_metric().push(metric);
        }
        family
    }
}

const RUN_LOCALITIES: [Locality; 4] = Locality::ALL;

/// Renders the snapshot in the Prometheus text format.
pub fn render(s: &Snapshot) -> String {
    use MetricType::{COUNTER, GAUGE};
    let mut vcpu_run = Family::new("pinsight_vcpu_run_seconds_total", COUNTER, "On-CPU time of a vCPU thread by locality of the CPU relative to the VM's GPUs (local: a GPU's NUMA node; same_socket: another node of a GPU's socket; remote: another socket; none: VM without GPU or CPU unknown to the topology).");
    let mut domain_run = Family::new(
        "pinsight_domain_run_seconds_total",
        COUNTER,
        "On-CPU time of all vCPU threads of a VM by locality relative to its GPUs.",
    );
    let mut migrations = Family::new(
        "pinsight_vcpu_cross_socket_migrations_total",
        COUNTER,
        "Moves of a vCPU thread from a CPU of one socket to a CPU of another (sched_migrate_task).",
    );
    let mut ratio = Family::new("pinsight_domain_remote_ratio", GAUGE, "Share (0..1) of the VM's vCPU run time spent on another socket than its GPUs, over the recent window (remote_ratio_window_seconds).");
    let mut overhead = Family::new("pinsight_domain_estimated_overhead_ratio", GAUGE, "Estimated share of performance lost to cross-socket placement: remote ratio x cross_socket_penalty (an estimate, not a measurement).");
    let mut info = Family::new("pinsight_domain_info", GAUGE, "Descriptive labels of a running VM: UUID, GPU PCI addresses and their NUMA nodes, Nova names.");
    let mut vcpu_exits = Family::new("pinsight_vcpu_kvm_exits_total", COUNTER, "KVM exits of a vCPU thread by locality of the CPU it exited on and by reason (a bounded set, other for the rest).");
    let mut domain_exits = Family::new(
        "pinsight_domain_kvm_exits_total",
        COUNTER,
        "KVM exits of all vCPU threads of a VM by locality of the CPU they exited on.",
    );
    let mut recommended = Family::new(
        "pinsight_repin_recommended",
        GAUGE,
        "1 when the policy would repin this vCPU to its GPU's node (recommend and enforce modes).",
    );
    let mut repins = Family::new("pinsight_repins_total", COUNTER, "Repin decisions by result (applied, failed, skipped_cooldown, skipped_optout, skipped_orchestrator, no_capacity, rate_limited).");

    for vm in &s.vms {
        info.push(
            vec![
                ("domain", vm.domain.clone()),
                ("uuid", vm.uuid.clone()),
                ("gpus", vm.gpus.clone()),
                ("gpu_nodes", vm.gpu_nodes.clone()),
                ("nova_instance", vm.nova_instance.clone()),
                ("nova_project", vm.nova_project.clone()),
            ],
            1.0,
        );
        let Some(totals) = s.totals.get(&vm.domain) else {
            continue;
        };
        let has_gpu = !vm.gpu_nodes.is_empty();
        let run = totals.run_seconds();
        for (i, l) in RUN_LOCALITIES.iter().enumerate() {
            // A VM with GPUs shows local/same_socket/remote (none only if it has any); a VM
            // without shows only none.
            if has_gpu != (*l == Locality::None) || (*l == Locality::None && run[i] > 0.0) {
                domain_run.push(
                    vec![
                        ("domain", vm.domain.clone()),
                        ("locality", l.as_str().into()),
                    ],
                    run[i],
                );
            }
        }
        if let Some(r) = totals
            .remote_ratio
            .or(has_gpu.then(|| remote_share(&run).unwrap_or(0.0)))
        {
            ratio.push(vec![("domain", vm.domain.clone())], r);
            overhead.push(
                vec![("domain", vm.domain.clone())],
                r * s.cross_socket_penalty,
            );
        }
        let exits = totals.exits_by_locality();
        for (i, l) in RUN_LOCALITIES.iter().enumerate() {
            if exits[i] > 0 || (has_gpu && *l != Locality::None) {
                domain_exits.push(
                    vec![
                        ("domain", vm.domain.clone()),
                        ("locality", l.as_str().into()),
                    ],
                    exits[i] as f64,
                );
            }
        }
        if !s.per_vcpu {
            continue;
        }
        for (vcpu, t) in &totals.vcpus {
            let labels = |extra: Vec<(&'static str, String)>| {
                let mut l = vec![("domain", vm.domain.clone()), ("vcpu", vcpu.to_string())];
                l.extend(extra);
                l
            };
            for (i, l) in RUN_LOCALITIES.iter().enumerate() {
                if has_gpu != (*l == Locality::None)
                    || (*l == Locality::None && t.run_seconds[i] > 0.0)
                {
                    vcpu_run.push(
                        labels(vec![("locality", l.as_str().into())]),
                        t.run_seconds[i],
                    );
                }
            }
            migrations.push(labels(vec![]), t.cross_socket_migrations as f64);
            for ((l, reason), n) in &t.exits {
                vcpu_exits.push(
                    labels(vec![
                        ("locality", l.as_str().into()),
                        ("reason", reason.to_string()),
                    ]),
                    *n as f64,
                );
            }
        }
    }
    for ((domain, vcpu), on) in &s.recommended {
        recommended.push(
            vec![("domain", domain.clone()), ("vcpu", vcpu.to_string())],
            f64::from(u8::from(*on)),
        );
    }
    for ((domain, result), n) in &s.repins {
        repins.push(
            vec![("domain", domain.clone()), ("result", result.clone())],
            *n as f64,
        );
    }

    let mut attached = Family::new(
        "pinsight_probe_attached",
        GAUGE,
        "1 when the probe is attached, 0 when it was skipped (the log says why).",
    );
    for (probe, on) in &s.probes {
        attached.push(vec![("probe", probe.clone())], f64::from(u8::from(*on)));
    }
    let mut libvirt = Family::new(
        "pinsight_libvirt_up",
        GAUGE,
        "1 when the last libvirt scan succeeded.",
    );
    libvirt.push(vec![], f64::from(u8::from(s.libvirt_up)));
    let mut build = Family::new(
        "pinsight_build_info",
        GAUGE,
        "Version of the running pinsight.",
    );
    build.push(vec![("version", env!("CARGO_PKG_VERSION").into())], 1.0);
    let mut run_time = Family::new(
        "pinsight_probe_run_seconds_total",
        COUNTER,
        "Time the kernel spent in the probe program (needs kernel.bpf_stats_enabled=1).",
    );
    let mut runs = Family::new(
        "pinsight_probe_runs_total",
        COUNTER,
        "Runs of the probe program (needs kernel.bpf_stats_enabled=1).",
    );
    for (probe, ns, count) in s.program_stats.iter().flatten() {
        run_time.push(vec![("probe", probe.clone())], *ns as f64 / 1e9);
        runs.push(vec![("probe", probe.clone())], *count as f64);
    }
    let mut entries = Family::new(
        "pinsight_probe_map_entries",
        GAUGE,
        "Entries in use in a probe map.",
    );
    let mut capacity = Family::new(
        "pinsight_probe_map_capacity",
        GAUGE,
        "Capacity of a probe map (probes.max_threads, probes.max_exit_keys).",
    );
    for (map, used, cap) in &s.maps {
        entries.push(vec![("map", map.clone())], *used as f64);
        capacity.push(vec![("map", map.clone())], *cap as f64);
    }
    let mut errors = Family::new(
        "pinsight_probe_map_errors_total",
        COUNTER,
        "Failed map updates inside the probes (a full map loses counts).",
    );
    errors.push(vec![], s.map_errors as f64);
    let mut scrape = Family::new(
        "pinsight_scrape_duration_seconds",
        GAUGE,
        "Time the previous /metrics render took.",
    );
    scrape.push(vec![], s.scrape_duration_seconds);

    let families: Vec<MetricFamily> = [
        vcpu_run,
        domain_run,
        migrations,
        ratio,
        overhead,
        info,
        vcpu_exits,
        domain_exits,
        recommended,
        repins,
        attached,
        libvirt,
        build,
        run_time,
        runs,
        entries,
        capacity,
        errors,
        scrape,
    ]
    .into_iter()
    .filter(|f| !f.samples.is_empty())
    .map(Family::into_proto)
    .collect();
    let mut out = Vec::new();
    // Encoding into a Vec cannot fail for well-formed families; an error would be a bug here.
    if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
        tracing::error!("encoding metrics failed: {e}");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::accounting::VcpuTotals;

    fn snapshot(per_vcpu: bool) -> Snapshot {
        let vcpu = VcpuTotals {
            run_seconds: [1.0, 0.0, 3.0, 0.0],
            exits: BTreeMap::from([((Locality::Remote, "io"), 7)]),
            ..Default::default()
        };
        let mut totals = DomainTotals::default();
        totals.vcpus.insert(0, vcpu);
        Snapshot {
            vms: vec![VmLabels {
                domain: "vm".into(),
                gpu_nodes: "1".into(),
                ..Default::default()
            }],
            totals: BTreeMap::from([("vm".to_string(), totals)]),
            per_vcpu,
            cross_socket_penalty: 0.03,
            ..Default::default()
        }
    }

    #[test]
    fn per_vcpu_series_can_be_switched_off_while_per_domain_families_remain() {
        let with = render(&snapshot(true));
        let without = render(&snapshot(false));
        assert!(with.contains("pinsight_vcpu_run_seconds_total{"));
        assert!(with.contains("pinsight_vcpu_kvm_exits_total{"));
        assert!(!without.contains("pinsight_vcpu_"), "{without}");
        for family in [
            "pinsight_domain_run_seconds_total{domain=\"vm\",locality=\"remote\"} 3",
            "pinsight_domain_kvm_exits_total{domain=\"vm\",locality=\"remote\"} 7",
            "pinsight_domain_remote_ratio{domain=\"vm\"} 0.75",
        ] {
            assert!(without.contains(family), "missing {family} in:\n{without}");
        }
    }
}
