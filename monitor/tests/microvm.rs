//! QEMU's `microvm` machine type (NEMU's heir) under libvirt, exactly like a `pc` guest: the
//! real busy guest kernel in a microvm domain on the two-socket fixture shows run time by
//! locality and KVM exits, and enforce mode repins it next to its GPU.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::policy::{operator, repins, wait_seen};
use common::{metric_sum, metric_value, require_host, wait_for, TestVm, VmOptions};

const CONFIG: &str = "tick_seconds = 0.25\nrescan_seconds = 0.5\n\
    remote_ratio_window_seconds = 2.0\n[policy]\nopt_in = true\nmax_oversubscription = 8.0\n";

#[test]
fn a_microvm_guest_is_measured_and_repinned_like_a_pc_guest() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(operator("on")),
        machine: "microvm",
        ..VmOptions::busy("microvm")
    });
    assert!(
        vm.dumpxml().contains("machine='microvm'") || vm.dumpxml().contains("machine=\"microvm\""),
        "libvirt did not start a microvm:\n{}",
        vm.dumpxml()
    );
    // Far from the fixture GPU (node 1, CPU 1).
    vm.pin_vcpu(0, "0");
    let domain = vm.name.clone();

    // Observe first: run time remote, exits counted.
    {
        let daemon = Daemon::start(&fixture("two-socket-gpu"), CONFIG, &[]);
        wait_seen(&daemon, &vm);
        let m = wait_for(Duration::from_secs(10), "remote run time and exits", || {
            let m = daemon.metrics();
            let remote = metric_sum(
                &m,
                "pinsight_domain_run_seconds_total",
                &[("domain", &domain), ("locality", "remote")],
            );
            let exits = metric_sum(
                &m,
                "pinsight_domain_kvm_exits_total",
                &[("domain", &domain)],
            );
            (remote > 0.5 && exits > 0.0).then_some(m)
        });
        let ratio = metric_value(&m, "pinsight_domain_remote_ratio", &[("domain", &domain)])
            .expect("a remote ratio for the microvm");
        assert!(ratio > 0.9, "remote ratio {ratio} while pinned far:\n{m}");
    }

    // Enforce: repinned next to the GPU, and run time turns local.
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!("{CONFIG}mode = \"enforce\"\n"),
        &[],
    );
    wait_for(Duration::from_secs(20), "the microvm's repin", || {
        repins(&daemon, &domain, "applied")
    });
    assert_eq!(vm.allowed_cpus(0), "1", "repinned to the GPU's socket");
    wait_for(Duration::from_secs(10), "the remote ratio to fall", || {
        let r = metric_value(
            &daemon.metrics(),
            "pinsight_domain_remote_ratio",
            &[("domain", &domain)],
        )?;
        (r < 0.1).then_some(r)
    });
}
