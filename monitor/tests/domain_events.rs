//! While libvirt's domain events arrive, the periodic rescan is only a safety net
//! (`rescan_seconds`, 30 s by default): what libvirt reports is seen at once. With
//! `rescan_seconds = 3600` the daemon rescans only when an event says so, and each kind the
//! daemon relies on is shown to cause one: a VM start (lifecycle), a GPU declared in the
//! operator's metadata (metadata change) and a pin change (tunable). (Device hot-plug
//! events are registered too; the test VMs' PCI bus takes no hot-plug, so none is shown.) `pinsight_inventory_last_success_timestamp_seconds` moves with each
//! rescan and holds still between events.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::{metric_value, require_host, virsh_ok, wait_for, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";
/// Longest an event may take to show: the event, a rescan, a tick, a publish.
const SEEN_WITHIN: Duration = Duration::from_secs(5);

fn last_scan(daemon: &Daemon) -> f64 {
    metric_value(
        &daemon.metrics(),
        "pinsight_inventory_last_success_timestamp_seconds",
        &[],
    )
    .unwrap_or(0.0)
}

/// Waits for a rescan after `before` (the last scan's time), caused by `what`; returns the
/// new scan time and how long it took.
fn rescanned(daemon: &Daemon, before: f64, what: &str) -> f64 {
    let t0 = Instant::now();
    let after = wait_for(SEEN_WITHIN, &format!("a rescan after {what}"), || {
        let t = last_scan(daemon);
        (t > before).then_some(t)
    });
    eprintln!(
        "{what}: rescanned after {:.2} s",
        t0.elapsed().as_secs_f64()
    );
    after
}

#[test]
fn domain_events_cause_rescans_and_nothing_else_does() {
    require_host();
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 3600\n",
        &[],
    );
    daemon.log_line(Duration::from_secs(10), &["libvirt events: listening"]);
    // The scans before the events connected came every 5 s (a source without events);
    // once connected, none comes without an event: 6 s without one.
    let quiet = wait_for(Duration::from_secs(10), "a first inventory", || {
        let t = last_scan(&daemon);
        (t > 0.0).then_some(t)
    });
    std::thread::sleep(Duration::from_secs(6));
    let settled = last_scan(&daemon);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        last_scan(&daemon),
        settled,
        "the daemon rescanned in 6 s without a domain event (first scan at {quiet})"
    );

    // Lifecycle: a VM that starts is found at once.
    let vm = TestVm::start(VmOptions {
        name_hint: "events",
        ..VmOptions::busy("events")
    });
    let domain = vm.name.as_str();
    wait_for(SEEN_WITHIN, "the started VM in /metrics", || {
        metric_value(
            &daemon.metrics(),
            "pinsight_domain_info",
            &[("domain", domain)],
        )
    });
    // Let the start's burst of events (started, resumed) be rescanned, then hold still.
    std::thread::sleep(Duration::from_secs(2));
    let before = last_scan(&daemon);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(last_scan(&daemon), before, "rescanned without an event");

    // Metadata change: the operator declares the VM's GPU, and its node shows.
    virsh_ok(&[
        "metadata",
        domain,
        "--uri",
        "urn:pinsight:domain:1",
        "--key",
        "pinsight",
        "--live",
        "--set",
        // In the namespace as a whole: libvirt puts only the root element in --uri's.
        &format!("<domain xmlns=\"urn:pinsight:domain:1\"><gpu address=\"{GPU}\"/></domain>"),
    ]);
    let before = rescanned(&daemon, before, "virsh metadata --set (a GPU declared)");
    wait_for(
        SEEN_WITHIN,
        "the declared GPU's node in domain_info",
        || {
            metric_value(
                &daemon.metrics(),
                "pinsight_domain_info",
                &[("domain", domain), ("gpu_nodes", "1")],
            )
        },
    );

    // Tunable: a pin changed through libvirt.
    vm.pin_vcpu(0, "1");
    rescanned(&daemon, before, "virsh vcpupin (a pin changed)");
}
