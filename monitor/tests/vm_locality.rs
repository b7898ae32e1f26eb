//! End to end on the real host: a real KVM guest that keeps its vCPU busy declares a fixture
//! GPU that the two-socket fixture places on socket 1 (CPU 1). The real daemon watches it with
//! its real probes while `virsh vcpupin --live` moves the vCPU between CPU 0 (socket 0: remote)
//! and CPU 1 (the GPU's node: local), and /metrics must follow.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::{metric_sum, metric_value, require_host, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";
const TICK: f64 = 0.25;

fn run_seconds(metrics: &str, domain: &str, locality: &str) -> f64 {
    metric_value(
        metrics,
        "pinsight_vcpu_run_seconds_total",
        &[("domain", domain), ("vcpu", "0"), ("locality", locality)],
    )
    .unwrap_or_else(|| panic!("no {locality} run time for {domain} in:\n{metrics}"))
}

#[test]
fn remote_and_local_time_follow_live_repins_and_match_schedstat() {
    require_host();
    let vm = TestVm::start(VmOptions {
        name_hint: "locality",
        busy: true,
        spin_iterations: 2000,
        metadata_xml: Some(common::gpu_metadata(GPU)),
        vcpu_cpuset: None,
    });
    vm.pin_vcpu(0, "0");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = {TICK}\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n"
        ),
        &[],
    );
    let domain = vm.name.as_str();
    common::wait_for(
        Duration::from_secs(20),
        "the VM in pinsight_domain_info",
        || {
            let m = daemon.metrics();
            metric_value(
                &m,
                "pinsight_domain_info",
                &[("domain", domain), ("gpus", GPU), ("gpu_nodes", "1")],
            )
        },
    );
    assert_eq!(
        metric_value(
            &daemon.metrics(),
            "pinsight_probe_attached",
            &[("probe", "sched_switch")]
        ),
        Some(1.0)
    );

    // Phase 1: pinned to CPU 0, the far socket. Remote time grows at about the guest's rate.
    std::thread::sleep(Duration::from_secs(1));
    let (m0, k0, t0) = (daemon.metrics(), vm.schedstat_run_ns(0), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (m1, k1, t1) = (daemon.metrics(), vm.schedstat_run_ns(0), Instant::now());
    let remote_gain = run_seconds(&m1, domain, "remote") - run_seconds(&m0, domain, "remote");
    let local_gain = run_seconds(&m1, domain, "local") - run_seconds(&m0, domain, "local");
    let wall = (t1 - t0).as_secs_f64();
    assert!(
        remote_gain > 0.5 * wall,
        "remote grew {remote_gain:.2}s in {wall:.2}s while pinned far"
    );
    assert!(
        local_gain < 0.05 * wall,
        "local grew {local_gain:.2}s while pinned far"
    );
    let ratio = metric_value(&m1, "pinsight_domain_remote_ratio", &[("domain", domain)]).unwrap();
    assert!(ratio > 0.9, "remote ratio {ratio} while pinned far");

    // Phase 2: pinned to CPU 1, the GPU's node. Local time grows, remote stops.
    let migrations_before = metric_sum(
        &m1,
        "pinsight_vcpu_cross_socket_migrations_total",
        &[("domain", domain)],
    );
    vm.pin_vcpu(0, "1");
    std::thread::sleep(Duration::from_secs(1));
    let (m2, k2) = (daemon.metrics(), vm.schedstat_run_ns(0));
    std::thread::sleep(Duration::from_secs(3));
    let (m3, k3, t3) = (daemon.metrics(), vm.schedstat_run_ns(0), Instant::now());
    let local_gain = run_seconds(&m3, domain, "local") - run_seconds(&m2, domain, "local");
    let remote_gain = run_seconds(&m3, domain, "remote") - run_seconds(&m2, domain, "remote");
    assert!(
        local_gain > 0.5 * 3.0,
        "local grew only {local_gain:.2}s in 3s while pinned near"
    );
    assert!(
        remote_gain < 0.05 * 3.0,
        "remote grew {remote_gain:.2}s while pinned near"
    );
    let migrations_after = metric_sum(
        &m3,
        "pinsight_vcpu_cross_socket_migrations_total",
        &[("domain", domain)],
    );
    assert!(
        migrations_after >= migrations_before + 1.0,
        "the move to the other socket was not counted ({migrations_before} -> {migrations_after})"
    );
    common::wait_for(
        Duration::from_secs(10),
        "the remote ratio to fall after the repin",
        || {
            let r = metric_value(
                &daemon.metrics(),
                "pinsight_domain_remote_ratio",
                &[("domain", domain)],
            )?;
            (r < 0.1).then_some(r)
        },
    );

    // Agreement with the kernel's own accounting of the same thread over the same interval.
    // Both count the same stints; the daemon's figure may be up to one tick stale at each end
    // of the interval, so at 100% busy the two can differ by 2 ticks of run time; 5% more
    // covers scrape and read latency on this shared, nested machine.
    let total = |m: &str| {
        metric_sum(
            m,
            "pinsight_vcpu_run_seconds_total",
            &[("domain", domain), ("vcpu", "0")],
        )
    };
    let ours = total(&m3) - total(&m0);
    let kernel = (k3 - k0) as f64 / 1e9;
    let tolerance = 2.0 * TICK + 0.05 * kernel;
    assert!(
        (ours - kernel).abs() <= tolerance,
        "daemon counted {ours:.3}s, schedstat {kernel:.3}s over {:.1}s (tolerance {tolerance:.3}s)",
        (t3 - t0).as_secs_f64()
    );
    let _ = (k1, k2);
}
