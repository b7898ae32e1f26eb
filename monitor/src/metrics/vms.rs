//! The per-VM and per-vCPU families: run time, KVM exits and moves by locality, the remote
//! ratio, the overhead estimate, the info labels, and the policy's recommendations and repins.

use prometheus::proto::MetricType;

use super::text::{bounded_label, Family};
use crate::accounting::ByLocality;
use crate::topology::Locality;
use crate::view::VmView;
use monitor_common::sched_migrate_task::MoveScope;

/// Which localities a run-time family shows: a VM with GPUs shows local, same_socket and
/// remote (and none only if it has any); a VM without shows only none.
pub(super) fn shown_localities(
    has_gpu: bool,
    run: &ByLocality<f64>,
) -> impl Iterator<Item = (Locality, f64)> + '_ {
    run.iter().filter(move |(l, x)| {
        has_gpu != (*l == Locality::None) || (*l == Locality::None && *x > 0.0)
    })
}

/// The families of `vms` (the exported ones); `per_vcpu_metrics` false leaves out the
/// per-vCPU series but pinsight_repin_recommended.
pub(super) fn families(vms: &[VmView], per_vcpu_metrics: bool, cut: &mut u64) -> Vec<Family> {
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
        "Moves of a vCPU thread from a CPU of one socket to a CPU of another (sched_migrate_task); the same count as pinsight_vcpu_migrations_total{scope=\"socket\"}, kept for the dashboards and alerts that use it.",
    );
    let mut moves = Family::new(
        "pinsight_vcpu_migrations_total",
        COUNTER,
        "Moves of a vCPU thread from one CPU to another (sched_migrate_task), by the smallest topology level the two CPUs share: smt (SMT siblings of one core), core (another core of the node), node (another node of the socket), socket (another socket); unknown (a CPU the topology does not describe) only once it happened. Each move can cost the thread its L1 cache (L1TF flushing), and more the farther it goes.",
    );
    let mut measured = Family::new(
        "pinsight_vcpu_measured",
        GAUGE,
        "1 when the probes account this vCPU's thread; 0 when they cannot (probe maps full: raise probes.max_threads; or the probes are not loaded), so its run time of 0 does not mean idle.",
    );
    let mut ratio = Family::new("pinsight_domain_remote_ratio", GAUGE, "Share (0..1) of the VM's vCPU run time spent on another socket than its GPUs, over the recent window (remote_ratio_window_seconds).");
    let mut overhead = Family::new("pinsight_domain_estimated_overhead_ratio", GAUGE, "Estimated share of performance lost to the VM's placement: the sum of pinsight_domain_overhead_ratio's parts, at most 1 (an estimate from measured shares and assumed penalties, not a measurement).");
    let mut overhead_parts = Family::new("pinsight_domain_overhead_ratio", GAUGE, "The overhead estimate by part: the part's remote share x its penalty (cpu: vCPU run time, cross_socket_penalty; memory: resident memory, overhead.memory_penalty; irq: GPU interrupt lines delivered off the GPU's node, overhead.irq_penalty; emulator: run time of QEMU's main loop and IOThreads, overhead.emulator_penalty), and part=\"total\", their sum. Parts not measured are absent.");
    let mut info = Family::new("pinsight_domain_info", GAUGE, "Descriptive labels of a running VM: UUID, VMM (libvirt or qemu), GPU PCI addresses and their NUMA nodes, Nova names, and libvirt's memory policy (numatune mode and nodeset; empty without one).");
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
    let mut repins = Family::new("pinsight_repins_total", COUNTER, "Repin decisions by result (applied, failed, skipped_cooldown, skipped_optout, skipped_orchestrator, skipped_operator, skipped_unmanaged: a VM without libvirt, no_capacity, rate_limited).");

    for vm in vms {
        let mut label = |value: &str| bounded_label(value, cut);
        let join = |items: Vec<String>| items.join(",");
        let domain_label = label(&vm.domain);
        info.push(
            vec![
                ("domain", domain_label.clone()),
                ("uuid", label(&vm.uuid)),
                ("vmm", vm.vmm.as_str().into()),
                (
                    "gpus",
                    label(&join(vm.gpus.iter().map(|g| g.address.clone()).collect())),
                ),
                (
                    "gpu_nodes",
                    label(&join(vm.gpu_nodes.iter().map(u32::to_string).collect())),
                ),
                (
                    "nova_instance",
                    label(vm.nova_instance.as_deref().unwrap_or_default()),
                ),
                (
                    "nova_project",
                    label(vm.nova_project.as_deref().unwrap_or_default()),
                ),
                (
                    "numatune_mode",
                    label(vm.numatune.as_ref().map_or("", |(m, _)| m.as_str())),
                ),
                (
                    "numatune_nodeset",
                    label(
                        vm.numatune
                            .as_ref()
                            .and_then(|(_, n)| n.as_deref())
                            .unwrap_or_default(),
                    ),
                ),
            ],
            1.0,
        );
        let has_gpu = vm.has_gpu();
        let domain = || ("domain", domain_label.clone());
        for (l, x) in shown_localities(has_gpu, &vm.run_seconds) {
            domain_run.push(vec![domain(), ("locality", l.as_str().into())], x);
        }
        if let Some(r) = vm.remote_ratio {
            ratio.push(vec![domain()], r);
        }
        if let Some(o) = &vm.overhead {
            overhead.push(vec![domain()], o.total);
            for (part, x) in &o.parts {
                overhead_parts.push(vec![domain(), ("part", part.as_str().into())], *x);
            }
            overhead_parts.push(vec![domain(), ("part", "total".into())], o.total);
        }
        for (l, n) in vm.kvm_exits.iter() {
            if n > 0 || (has_gpu && l != Locality::None) {
                domain_exits.push(vec![domain(), ("locality", l.as_str().into())], n as f64);
            }
        }
        for v in &vm.vcpus {
            let labels = |extra: Vec<(&'static str, String)>| {
                let mut l = vec![domain(), ("vcpu", v.vcpu.to_string())];
                l.extend(extra);
                l
            };
            if let Some(on) = v.repin_recommended {
                recommended.push(labels(vec![]), f64::from(u8::from(on)));
            }
            if !per_vcpu_metrics {
                continue;
            }
            for (l, x) in shown_localities(has_gpu, &v.run_seconds) {
                vcpu_run.push(labels(vec![("locality", l.as_str().into())]), x);
            }
            migrations.push(labels(vec![]), v.cross_socket_migrations as f64);
            for scope in MoveScope::ALL {
                let n = v.migrations.get(scope);
                if scope != MoveScope::Unknown || n > 0 {
                    moves.push(labels(vec![("scope", scope.label().into())]), n as f64);
                }
            }
            measured.push(labels(vec![]), f64::from(u8::from(v.measured)));
            for e in &v.kvm_exits {
                vcpu_exits.push(
                    labels(vec![
                        ("locality", e.locality.as_str().into()),
                        ("reason", e.reason.to_string()),
                    ]),
                    e.count as f64,
                );
            }
        }
        for (result, n) in &vm.repins {
            repins.push(vec![domain(), ("result", result.clone())], *n as f64);
        }
    }
    vec![
        vcpu_run,
        domain_run,
        migrations,
        moves,
        measured,
        ratio,
        overhead,
        overhead_parts,
        info,
        vcpu_exits,
        domain_exits,
        recommended,
        repins,
    ]
}
