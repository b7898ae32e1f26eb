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
mod text;
mod threads;
mod vms;

use prometheus::proto::MetricType;

use crate::view::HostView;
use text::{encode, Family};

/// Renders the view in the Prometheus text format (all families but the scrape duration).
pub fn render(view: &HostView) -> String {
    use MetricType::{COUNTER, GAUGE};
    let mut cut = 0u64;
    let exported = view.vms.len().min(view.max_exported_vms);
    let mut families = vms::families(&view.vms[..exported], view.per_vcpu_metrics, &mut cut);
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
    let filter = &view.probes.depth_filter;
    let mut filter_open = Family::new(
        "pinsight_probe_depth_filter_open",
        GAUGE,
        "1 while sched_switch looks every switch up in its thread table (at start, while a thread that ran unseen is waited for, or always on a kernel without se.depth or the cgroup_attach_task probe); 0 while it stops switches between threads at CPU cgroup depths where no tracked thread is.",
    );
    filter_open.push(vec![], f64::from(u8::from(filter.open)));
    let mut ran_unseen = Family::new(
        "pinsight_probe_depth_filter_threads_ran_unseen_total",
        COUNTER,
        "Tracked threads found running while the depth filter hid them (their cgroup depth read from /proc was not the scheduler's, or a move was not shown); each opened the filter until the probes saw it. Their run time is still counted.",
    );
    ran_unseen.push(vec![], filter.threads_ran_unseen as f64);

    families.extend([
        attached,
        build,
        run_time,
        runs,
        entries,
        capacity,
        errors,
        unseen,
        filter_open,
        ran_unseen,
        truncated,
        hidden,
    ]);
    families.extend(vm_memory);
    families.extend(vm_threads);
    families.extend(memory::calibration_families(view));
    families.extend(gpu_interrupts);
    families.extend(fix_families);
    families.extend(health::families(view));
    encode(families)
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

#[cfg(test)]
mod tests;
