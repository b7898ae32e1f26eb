//! KVM exits by locality from the real probe, against an independent count of the same
//! tracepoint by perf over the same interval.

mod common;

use std::process::Command;
use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_sum, metric_value, require_host, wait_for, TestVm, VmOptions};

const TICK: f64 = 0.1;

#[test]
fn exits_per_vcpu_and_locality_agree_with_perf() {
    require_host();
    // The busy guest does `out %al, $0x80` after every countdown: each one is an IO exit to QEMU.
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:3b:00.0")),
        ..VmOptions::busy("exits")
    });
    vm.pin_vcpu(0, "0");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!("tick_seconds = {TICK}\nrescan_seconds = 0.5\n"),
        &[],
    );
    let domain = vm.name.clone();
    let source = wait_for(
        Duration::from_secs(20),
        "a KVM exit source attached",
        || {
            let m = daemon.metrics();
            ["kvm_exit", "kvm_userspace_exit"]
                .into_iter()
                .find(|p| metric_value(&m, "pinsight_probe_attached", &[("probe", p)]) == Some(1.0))
        },
    );
    assert!(daemon
        .log_text()
        .contains(&format!("KVM exit probe attached to kvm:{source}")));
    let exits = |m: &str, locality: &str| {
        metric_sum(
            m,
            "pinsight_vcpu_kvm_exits_total",
            &[("domain", &domain), ("vcpu", "0"), ("locality", locality)],
        )
    };
    wait_for(Duration::from_secs(20), "exits counted", || {
        (exits(&daemon.metrics(), "remote") > 0.0).then_some(())
    });

    // Exits happen in the vCPU thread; counting the whole QEMU process adds nothing else.
    // Our window (scrape, perf stat ... sleep 5, scrape) encloses perf's: it also covers perf's
    // own start-up and tear-down, which under load can take a good part of a second. So ours
    // may exceed perf's count by the exits of that extra wall time, and both may be off by the
    // staleness of the two scrapes (up to one tick each), plus 3% for rate jitter.
    let pid = vm.pid.to_string();
    let event = format!("kvm:{source}");
    let (before, t0) = (daemon.metrics(), std::time::Instant::now());
    let perf = Command::new("perf")
        .args(["stat", "-x,", "-e", &event, "-p", &pid, "--", "sleep", "5"])
        .output()
        .expect("perf (linux-perf, installed by scripts/setup.sh)");
    let (after, t1) = (daemon.metrics(), std::time::Instant::now());
    let perf_text = String::from_utf8_lossy(&perf.stderr);
    let perf_count: f64 = perf_text
        .lines()
        .find(|l| l.contains(&event))
        .and_then(|l| l.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("cannot read perf's count:\n{perf_text}"));
    assert!(
        perf_count > 100.0,
        "the busy guest made only {perf_count} exits in 5 s:\n{perf_text}"
    );
    let ours = exits(&after, "remote") - exits(&before, "remote");
    let wall = (t1 - t0).as_secs_f64();
    let rate = perf_count / 5.0;
    let jitter = 2.0 * TICK * rate + 0.03 * perf_count;
    let perf_overhead = (wall - 5.0).max(0.0) * rate;
    assert!(
        ours >= perf_count - jitter && ours <= perf_count + perf_overhead + jitter,
        "pinsight counted {ours} exits over {wall:.2} s, perf {perf_count} over its 5 s \
         (allowed: {:.0} ..= {:.0})",
        perf_count - jitter,
        perf_count + perf_overhead + jitter
    );
    // Pinned to the far socket: no exit may be attributed to the GPU's node.
    assert_eq!(exits(&after, "local"), 0.0);
    let reason = if source == "kvm_userspace_exit" {
        "io"
    } else {
        "io_instruction"
    };
    assert!(
        metric_value(
            &after,
            "pinsight_vcpu_kvm_exits_total",
            &[
                ("domain", &domain),
                ("vcpu", "0"),
                ("locality", "remote"),
                ("reason", reason)
            ]
        )
        .unwrap_or(0.0)
            > 0.0,
        "no exits with reason {reason}:\n{after}"
    );
    assert!(
        metric_sum(
            &after,
            "pinsight_domain_kvm_exits_total",
            &[("domain", &domain), ("locality", "remote")]
        ) >= exits(&after, "remote")
    );
}

#[test]
fn probe_self_metrics_appear_with_bpf_stats() {
    require_host();
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\n",
        &["--bpf-stats"],
    );
    let m = wait_for(Duration::from_secs(10), "probe run counts", || {
        let m = daemon.metrics();
        (metric_value(
            &m,
            "pinsight_probe_runs_total",
            &[("probe", "sched_switch")],
        )
        .unwrap_or(0.0)
            > 0.0)
            .then_some(m)
    });
    assert!(
        metric_value(
            &m,
            "pinsight_probe_run_seconds_total",
            &[("probe", "sched_switch")]
        )
        .unwrap()
            > 0.0
    );
    assert_eq!(
        metric_value(&m, "pinsight_probe_map_capacity", &[("map", "RUN_NS")]),
        Some(1024.0)
    );
    assert_eq!(
        metric_value(&m, "pinsight_probe_map_errors_total", &[]),
        Some(0.0)
    );
}
