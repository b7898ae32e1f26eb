//! A real VM's QEMU threads by role: the vCPU, the main loop (emulator), the IOThreads (one
//! from libvirt's `<iothreads>`, plus QEMU's monitor IOThread) and the rest are accounted by
//! locality like vCPUs, and each role's run time equals the kernel's schedstat of its threads
//! over an interval fenced by stopping the whole QEMU process (SIGSTOP stops the main loop and
//! IOThreads too, which pausing the guest does not). The fixture GPU is on socket 1 (CPU 1):
//! the vCPU is pinned there (local), the emulator to CPU 0 (remote), so the roles' localities
//! differ and the overhead estimate gets an emulator part.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_sum, metric_value, require_host, virsh_ok, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";
/// The roles whose threads live as long as the VM, so schedstat can be summed over them.
const STABLE_ROLES: [&str; 3] = ["vcpu", "emulator", "iothread"];

fn role_seconds(metrics: &str, domain: &str, role: &str, locality: Option<&str>) -> f64 {
    let mut labels = vec![("domain", domain), ("role", role)];
    labels.extend(locality.map(|l| ("locality", l)));
    metric_sum(metrics, "pinsight_domain_thread_run_seconds_total", &labels)
}

#[test]
fn each_role_is_accounted_by_locality_and_agrees_with_schedstat() {
    require_host();
    let vm = TestVm::start(VmOptions {
        name_hint: "roles",
        metadata_xml: Some(common::gpu_metadata(GPU)),
        iothreads: 1,
        ..VmOptions::busy("roles")
    });
    let domain = vm.name.as_str();
    vm.pin_vcpu(0, "1");
    virsh_ok(&["emulatorpin", domain, "0", "--live"]);
    virsh_ok(&["iothreadpin", domain, "1", "1", "--live"]);

    // The test's own view of the threads, from their names (libvirt runs QEMU with
    // debug-threads=on): the main thread is the pid, IOThreads are "IO <id>".
    let threads = vm.threads();
    let io: Vec<u32> = threads
        .iter()
        .filter(|(_, name)| name.starts_with("IO "))
        .map(|(tid, _)| *tid)
        .collect();
    let names: Vec<&str> = threads.iter().map(|(_, n)| n.as_str()).collect();
    assert!(
        names.contains(&"IO iothread1") && names.contains(&"IO mon_iothread"),
        "QEMU's threads: {names:?}"
    );
    let tids = |role: &str| -> Vec<u32> {
        match role {
            "vcpu" => vm.vcpu_tids.clone(),
            "emulator" => vec![vm.pid],
            "iothread" => io.clone(),
            _ => unreachable!("{role}"),
        }
    };
    let kernel_seconds = |role: &str| -> f64 {
        tids(role).iter().map(|&t| vm.thread_run_ns(t)).sum::<u64>() as f64 / 1e9
    };

    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n",
        &["--bpf-stats"],
    );
    let count = |m: &str, role: &str| {
        metric_value(
            m,
            "pinsight_domain_threads",
            &[("domain", domain), ("role", role)],
        )
    };
    let m = common::wait_for(Duration::from_secs(20), "the VM's threads by role", || {
        let m = daemon.metrics();
        let seen = count(&m, "vcpu") == Some(1.0)
            && count(&m, "emulator") == Some(1.0)
            && count(&m, "iothread") == Some(io.len() as f64)
            && count(&m, "other").is_some_and(|n| n >= 1.0);
        seen.then_some(m)
    });
    eprintln!(
        "threads by role: vcpu 1, emulator 1, iothread {}, other {:?}",
        io.len(),
        count(&m, "other")
    );
    // Tracking starts with the rescan that listed the threads; let a tick read them all.
    std::thread::sleep(Duration::from_secs(1));

    let fenced = |what: &str| {
        let _stopped = vm.freeze();
        let (_, m) = daemon.settled(what, |m| {
            STABLE_ROLES
                .iter()
                .map(|r| role_seconds(m, domain, r, None))
                .sum()
        });
        let kernel: Vec<f64> = STABLE_ROLES.iter().map(|r| kernel_seconds(r)).collect();
        (m, kernel)
    };
    let (m0, k0) = fenced("run time of the stopped QEMU's threads");
    // Work for the main loop and the monitor IOThread over the 3 s: QMP commands (read by
    // mon_iothread, run by the main loop), so both surely run.
    for _ in 0..10 {
        virsh_ok(&[
            "qemu-monitor-command",
            domain,
            r#"{"execute":"query-status"}"#,
        ]);
        std::thread::sleep(Duration::from_millis(300));
    }
    let (m1, k1) = fenced("run time of the stopped QEMU's threads, again");

    for (i, role) in STABLE_ROLES.iter().enumerate() {
        let ours = role_seconds(&m1, domain, role, None) - role_seconds(&m0, domain, role, None);
        let kernel = k1[i] - k0[i];
        eprintln!("role {role}: pinsight {ours:.6} s, schedstat {kernel:.6} s");
        common::assert_agrees_with_schedstat(&format!("role {role} over 3 s"), ours, kernel);
    }
    let gain = |role: &str, locality: &str| {
        role_seconds(&m1, domain, role, Some(locality))
            - role_seconds(&m0, domain, role, Some(locality))
    };
    // Premises, so the checks below are not vacuous: the spin guest's vCPU ran, the main
    // loop and the IOThreads ran at all.
    assert!(
        k1[0] - k0[0] > 0.2,
        "the busy vCPU ran only {} s",
        k1[0] - k0[0]
    );
    assert!(k1[1] > k0[1], "QEMU's main loop did not run in 3 s");
    assert!(k1[2] > k0[2], "QEMU's IOThreads did not run in 3 s");
    // Where they ran: the vCPU on the GPU's node, the emulator on the far socket.
    let slack = common::AGREEMENT_SLACK_SECONDS;
    assert!(
        gain("vcpu", "remote").abs() <= slack,
        "{}",
        gain("vcpu", "remote")
    );
    assert!(
        gain("emulator", "local").abs() <= slack,
        "{}",
        gain("emulator", "local")
    );
    common::assert_agrees_with_schedstat(
        "the emulator's remote time",
        gain("emulator", "remote"),
        k1[1] - k0[1],
    );

    // The depth filter in front of the probes' thread table was closed to the VM's depths
    // (read from /proc/TID/cgroup when its threads were tracked: libvirt's cgroups, deeper
    // than the host's threads) and hid none of them: the agreements above hold with it closed.
    assert_eq!(
        metric_value(&m1, "pinsight_probe_depth_filter_open", &[]),
        Some(0.0),
        "the depth filter should be closed"
    );
    assert_eq!(
        metric_value(
            &m1,
            "pinsight_probe_depth_filter_threads_ran_unseen_total",
            &[]
        ),
        Some(0.0),
        "no tracked thread ran unseen"
    );

    // The overhead estimate: an emulator part (its share is mostly remote: the main loop and
    // the monitor IOThread follow emulatorpin to CPU 0) and a total that is the parts' sum.
    let part = |p: &str| {
        metric_value(
            &m1,
            "pinsight_domain_overhead_ratio",
            &[("domain", domain), ("part", p)],
        )
    };
    let emulator = part("emulator").unwrap_or_else(|| panic!("no emulator part in:\n{m1}"));
    assert!(
        emulator > 0.0 && emulator <= 0.01,
        "emulator part {emulator}"
    );
    let sum: f64 = ["cpu", "memory", "irq", "emulator"]
        .iter()
        .filter_map(|p| part(p))
        .sum();
    let total = part("total").expect("a total");
    assert!((sum - total).abs() < 1e-9, "parts sum {sum}, total {total}");
    let estimated = metric_value(
        &m1,
        "pinsight_domain_estimated_overhead_ratio",
        &[("domain", domain)],
    );
    assert_eq!(estimated, Some(total));
}
