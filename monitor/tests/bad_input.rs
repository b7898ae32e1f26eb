//! Bad input and things going away: the daemon names the problem, keeps serving what it can,
//! and its health metrics tell the truth.

mod common;

use common::pinsight;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_value, require_host, virsh, wait_for, TestVm, VmOptions};

#[test]
fn check_names_the_bad_key_and_the_bad_sysfs_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "tick_seconds = -1\n").unwrap();
    let (ok, out) = pinsight(&["check", "--config", bad.to_str().unwrap()]);
    assert!(
        !ok && out.contains("tick_seconds") && out.contains("bad.toml"),
        "{out}"
    );
    std::fs::write(&bad, "[probes]\nmax_thread = 5\n").unwrap();
    let (ok, out) = pinsight(&["check", "--config", bad.to_str().unwrap()]);
    assert!(!ok && out.contains("max_thread"), "{out}");

    let malformed = fixture("malformed");
    let (ok, out) = pinsight(&["check", "--sysfs-root", malformed.to_str().unwrap()]);
    assert!(!ok && out.contains("physical_package_id"), "{out}");
    let (ok, out) = pinsight(&[
        "run",
        "--sysfs-root",
        malformed.to_str().unwrap(),
        "--listen",
        "127.0.0.1:1",
    ]);
    assert!(
        !ok && out.contains("physical_package_id") && !out.contains("panicked"),
        "{out}"
    );

    let good = fixture("two-socket-gpu");
    let (ok, out) = pinsight(&["check", "--sysfs-root", good.to_str().unwrap()]);
    assert!(ok && out.contains("2 sockets"), "{out}");
}

#[test]
fn unreachable_libvirt_is_reported_and_metrics_keep_being_served() {
    require_host();
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "libvirt_uri = \"qemu+unix:///system?socket=/nonexistent/libvirt-sock\"\ntick_seconds = 0.25\nrescan_seconds = 0.5\n",
        &[],
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metric_value(&metrics, "pinsight_libvirt_up", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "pinsight_probe_attached",
            &[("probe", "sched_switch")]
        ),
        Some(1.0)
    );
    let log = daemon.log_text();
    assert!(
        log.contains("/nonexistent/libvirt-sock") && !log.contains("panicked"),
        "{log}"
    );
}

#[test]
fn a_vm_that_vanishes_loses_its_series_and_its_map_entries() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:3b:00.0")),
        ..VmOptions::busy("vanish")
    });
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 0.5\n",
        &[],
    );
    let name = vm.name.clone();
    wait_for(
        Duration::from_secs(20),
        "the VM's run time on /metrics",
        || {
            let m = daemon.metrics();
            let run = common::metric_sum(
                &m,
                "pinsight_domain_run_seconds_total",
                &[("domain", &name)],
            );
            (run > 0.0).then_some(run)
        },
    );
    let entries = |m: &str| metric_value(m, "pinsight_probe_map_entries", &[("map", "RUN_NS")]);
    // Every thread of the QEMU process is tracked: the vCPU, and the others by role.
    wait_for(
        Duration::from_secs(10),
        "every QEMU thread in the run-time map",
        || {
            let threads = vm.threads().len() as f64;
            (entries(&daemon.metrics()) == Some(threads)).then_some(())
        },
    );

    virsh(&["destroy", &name]).expect("destroy the VM behind the daemon's back");
    wait_for(
        Duration::from_secs(20),
        "the VM's series and map entries to go",
        || {
            let m = daemon.metrics();
            let gone = !m.contains(&format!("domain=\"{name}\"")) && entries(&m) == Some(0.0);
            gone.then_some(())
        },
    );
    let m = daemon.metrics();
    assert_eq!(metric_value(&m, "pinsight_libvirt_up", &[]), Some(1.0));
    assert!(!daemon.log_text().contains("panicked"));
    drop(vm);
}

#[test]
fn a_second_instance_exits_naming_the_first_and_loads_no_probes() {
    require_host();
    let first = Daemon::start(&fixture("two-socket-gpu"), "tick_seconds = 0.25\n", &[]);
    let pid = first.pid();
    let started = std::time::Instant::now();
    let (ok, out) = common::pinsight(&[
        "run",
        "--listen",
        &format!("127.0.0.1:{}", common::free_port()),
        "--lock-file",
        first.lock_file.to_str().expect("a UTF-8 temp path"),
    ]);
    assert!(!ok, "a second pinsight run started:\n{out}");
    assert!(
        out.contains(&format!("another pinsight (pid {pid}) holds")),
        "the error does not name the holder (pid {pid}):\n{out}"
    );
    assert!(
        !out.contains("probes"),
        "the second instance went on to the probes:\n{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The first one is untouched and still serving.
    assert!(first.metrics().contains("pinsight_build_info"));
}
