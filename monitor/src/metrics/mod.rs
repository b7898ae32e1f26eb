//! The Prometheus exposition: every family pinsight exports, rendered from the engine's
//! published [`HostView`].
//!
//! A scrape only renders the view, so scrapes never touch the probes' maps or libvirt, and
//! VMs that are gone simply have no series. The HTTP side adds the one family it keeps itself
//! (its own render time, [`render_scrape_duration`]).

pub mod exporter;
mod fixes;
mod health;
mod interrupts;
mod memory;
mod threads;

use prometheus::proto::MetricType;

use crate::accounting::ByLocality;
use crate::topology::Locality;
use crate::view::HostView;
use monitor_common::sched_migrate_task::MoveScope;

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

    /// Appends the family in the Prometheus text format, byte for byte what the prometheus
    /// crate's `TextEncoder` writes for [`Family::into_proto`] (a test holds it to that), but
    /// without building a proto per sample: at 100 VMs x 8 vCPUs the protos were four fifths
    /// of a scrape's instructions (BENCHMARKS.md).
    fn write_text(&self, out: &mut String) {
        use std::fmt::Write;
        let kind = if self.kind == MetricType::COUNTER {
            "counter"
        } else {
            "gauge"
        };
        if !self.help.is_empty() {
            out.push_str("# HELP ");
            out.push_str(self.name);
            out.push(' ');
            push_escaped(out, self.help, false);
            out.push('\n');
        }
        for line in ["# TYPE ", self.name, " ", kind, "\n"] {
            out.push_str(line);
        }
        for (labels, value) in &self.samples {
            out.push_str(self.name);
            let mut separator = '{';
            for (name, value) in labels {
                out.push(separator);
                out.push_str(name);
                out.push_str("=\"");
                push_escaped(out, value, true);
                out.push('"');
                separator = ',';
            }
            if !labels.is_empty() {
                out.push('}');
            }
            // Writing into a String cannot fail.
            let _ = writeln!(out, " {value}");
        }
    }

    /// The proto the prometheus crate encodes: the reference [`Family::write_text`] is
    /// held to.
    #[cfg(test)]
    fn into_proto(self) -> prometheus::proto::MetricFamily {
        use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily};
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

/// Which localities a run-time family shows: a VM with GPUs shows local, same_socket and
/// remote (and none only if it has any); a VM without shows only none.
fn shown_localities(
    has_gpu: bool,
    run: &ByLocality<f64>,
) -> impl Iterator<Item = (Locality, f64)> + '_ {
    run.iter().filter(move |(l, x)| {
        has_gpu != (*l == Locality::None) || (*l == Locality::None && *x > 0.0)
    })
}

/// Renders the view in the Prometheus text format (all families but the scrape duration).
pub fn render(view: &HostView) -> String {
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

    let mut cut = 0u64;
    let exported = view.vms.len().min(view.max_exported_vms);
    for vm in &view.vms[..exported] {
        let mut label = |value: &str| bounded_label(value, &mut cut);
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
            if !view.per_vcpu_metrics {
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

    let gpu_interrupts = interrupts::families(&view.vms[..exported], &mut cut);
    let vm_memory = memory::families(&view.vms[..exported], &mut cut);
    let vm_threads = threads::families(&view.vms[..exported], &mut cut);
    let fix_families = fixes::families(view, &mut cut);
    let mut attached = Family::new(
        "pinsight_probe_attached",
        GAUGE,
        "1 when the probe is attached, 0 when it was skipped (the log says why).",
    );
    for (probe, p) in &view.probes.probes {
        attached.push(
            vec![("probe", probe.clone())],
            f64::from(u8::from(p.attached)),
        );
    }
    let mut build = Family::new(
        "pinsight_build_info",
        GAUGE,
        "A constant 1 labeled by the version, git commit and rustc version pinsight was built from.",
    );
    build.push(
        vec![
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("commit", exporter::COMMIT.into()),
            ("rustc_version", exporter::RUSTC_VERSION.into()),
        ],
        1.0,
    );
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
    for p in view.probes.program_stats.iter().flatten() {
        run_time.push(
            vec![("probe", p.program.clone())],
            p.run_time_ns as f64 / 1e9,
        );
        runs.push(vec![("probe", p.program.clone())], p.run_count as f64);
    }
    let mut entries = Family::new(
        "pinsight_probe_map_entries",
        GAUGE,
        "Entries in use in a probe map.",
    );
    let mut capacity = Family::new(
        "pinsight_probe_map_capacity",
        GAUGE,
        "Capacity of a probe map: RUN_NS holds every tracked QEMU thread (probes.max_threads + probes.max_other_threads), KVM_EXITS the vCPU threads (probes.max_threads).",
    );
    for m in &view.probes.maps {
        entries.push(vec![("map", m.map.clone())], m.entries as f64);
        capacity.push(vec![("map", m.map.clone())], m.capacity as f64);
    }
    let mut truncated = Family::new(
        "pinsight_label_values_truncated",
        GAUGE,
        "Label values cut to 256 bytes in this exposition (a ~ and a hash of the whole value keep them distinct).",
    );
    truncated.push(vec![], cut as f64);
    let mut hidden = Family::new(
        "pinsight_domains_not_exported",
        GAUGE,
        "Running VMs left out of the per-VM families by max_exported_vms.",
    );
    hidden.push(vec![], (view.vms.len() - exported) as f64);
    let mut errors = Family::new(
        "pinsight_probe_map_errors_total",
        COUNTER,
        "Failed map updates inside the probes (a full map loses counts).",
    );
    errors.push(vec![], view.probes.map_errors as f64);
    let mut unseen = Family::new(
        "pinsight_probe_unseen_switches_total",
        COUNTER,
        "Switches of tracked vCPU threads that the sched_switch tracepoint did not show (seen switched off twice, or on twice); their run time is still counted, from the kernel's run-time clock, on the CPU where the thread is next seen.",
    );
    unseen.push(vec![], view.probes.unseen_switches as f64);

    let mut families = vec![
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
        attached,
        build,
        run_time,
        runs,
        entries,
        capacity,
        errors,
        unseen,
        truncated,
        hidden,
    ];
    families.extend(vm_memory);
    families.extend(vm_threads);
    families.extend(memory::calibration_families(view));
    families.extend(gpu_interrupts);
    families.extend(fix_families);
    families.extend(health::families(view));
    encode(families)
}

/// A label value of at most 256 bytes: a longer one (a hostile domain or Nova name) keeps
/// its head, then `~` and 8 hex digits of a hash of the whole value, so two long values
/// never collapse into one series; `cut` counts them.
fn bounded_label(value: &str, cut: &mut u64) -> String {
    use crate::inventory::domain_xml::MAX_LABEL_VALUE_BYTES;
    if value.len() <= MAX_LABEL_VALUE_BYTES {
        return value.to_string();
    }
    *cut += 1;
    // FNV-1a: stable across runs and builds, unlike std's randomly keyed hasher.
    let hash = value.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let mut end = MAX_LABEL_VALUE_BYTES - 9;
    // A UTF-8 character is at most 4 bytes, so this steps back at most 3 times.
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}~{hash:08x}", &value[..end])
}

/// The family the HTTP side keeps itself: how long its previous /metrics render took.
pub fn render_scrape_duration(seconds: f64) -> String {
    let mut scrape = Family::new(
        "pinsight_scrape_duration_seconds",
        MetricType::GAUGE,
        "Time the previous /metrics render took.",
    );
    scrape.push(vec![], seconds);
    encode(vec![scrape])
}

/// The text format of every family that has samples (one without is left out, as the
/// prometheus crate's encoder refuses it).
fn encode(families: Vec<Family>) -> String {
    let mut out = String::new();
    for family in families.iter().filter(|f| !f.samples.is_empty()) {
        family.write_text(&mut out);
    }
    out
}

/// `text` with backslash and newline escaped (and the double quote, in a label value), as
/// the text format wants.
fn push_escaped(out: &mut String, text: &str, quote: bool) {
    if !text
        .bytes()
        .any(|b| b == b'\\' || b == b'\n' || (quote && b == b'"'))
    {
        out.push_str(text);
        return;
    }
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests;
