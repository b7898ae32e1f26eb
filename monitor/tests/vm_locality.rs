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

/// Seconds the thread ran between two schedstat readings; fails if it hardly ran at all,
/// which would make the phase's checks vacuous.
fn ran_seconds(before_ns: u64, after_ns: u64) -> f64 {
    let ran = after_ns.saturating_sub(before_ns) as f64 / 1e9;
    assert!(ran > 0.2, "the busy vCPU ran only {ran:.3}s in a 3 s phase");
    ran
}

#[test]
fn remote_and_local_time_follow_live_repins_and_match_schedstat() {
    require_host();
    let vm = TestVm::start(VmOptions {
        name_hint: "locality",
        busy: true,
        spin_iterations: 2000,
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::default()
    });
    vm.pin_vcpu(0, "0");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = {TICK}\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n"
        ),
        // Daemon::settled tells fresh publishes by the probe run counts.
        &["--bpf-stats"],
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

    let total = |m: &str| {
        metric_sum(
            m,
            "pinsight_vcpu_run_seconds_total",
            &[("domain", domain), ("vcpu", "0")],
        )
    };

    // Phase 1: pinned to CPU 0, the far socket. Remote time grows by (nearly) all the thread
    // ran, measured against schedstat rather than wall time: how much CPU the vCPU gets
    // depends on the load of this shared 2-CPU machine, not on pinsight. The phase starts
    // paused: the start of the interval both sides are compared over at the end.
    std::thread::sleep(Duration::from_secs(1));
    vm.suspend();
    let (ours0, m0) = daemon.settled("run time of the paused vCPU", total);
    let (k0, s0) = (vm.schedstat_run_ns(0), vm.context_switches(0));
    vm.resume();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    let (m1, k1, t1) = (daemon.metrics(), vm.schedstat_run_ns(0), Instant::now());
    let remote_gain = run_seconds(&m1, domain, "remote") - run_seconds(&m0, domain, "remote");
    let local_gain = run_seconds(&m1, domain, "local") - run_seconds(&m0, domain, "local");
    let wall = (t1 - t0).as_secs_f64();
    let ran = ran_seconds(k0, k1);
    // m1 may be a tick old: up to TICK of the thread's run time not yet in remote_gain.
    assert!(
        remote_gain > 0.5 * ran,
        "remote grew {remote_gain:.2}s while the thread ran {ran:.2}s (in {wall:.2}s) pinned far"
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
    let (m3, k3) = (daemon.metrics(), vm.schedstat_run_ns(0));
    let local_gain = run_seconds(&m3, domain, "local") - run_seconds(&m2, domain, "local");
    let remote_gain = run_seconds(&m3, domain, "remote") - run_seconds(&m2, domain, "remote");
    let ran = ran_seconds(k2, k3);
    assert!(
        local_gain > 0.5 * ran,
        "local grew only {local_gain:.2}s while the thread ran {ran:.2}s in 3s pinned near"
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

    // Agreement with the kernel's own accounting of the same thread over the same interval,
    // fenced by pausing the guest at both ends: a paused vCPU thread does not run, so once
    // pinsight's figure has settled (read fresh, not a tick old) and schedstat is read, both
    // cover exactly the same stints, timed by the same clock (the scheduler's
    // se.sum_exec_runtime, which the probe reads at each switch): they must be equal
    // (common::assert_agrees_with_schedstat).
    vm.suspend();
    let (ours4, _) = daemon.settled("run time of the paused vCPU", total);
    let (k4, s4) = (vm.schedstat_run_ns(0), vm.context_switches(0));
    let ours = ours4 - ours0;
    let kernel = (k4 - k0) as f64 / 1e9;
    let stints = s4 - s0;
    eprintln!(
        "run time over the fenced interval: pinsight {ours:.6}s, schedstat {kernel:.6}s, \
         difference {:.6}s over {stints} stints ({:.1} us a stint)",
        ours - kernel,
        (ours - kernel) * 1e6 / stints as f64
    );
    common::assert_agrees_with_schedstat(
        &format!("the fenced {:.1} s", t0.elapsed().as_secs_f64()),
        ours,
        kernel,
    );
}
