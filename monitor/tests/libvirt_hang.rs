//! Monitoring never waits on libvirt: the real daemon watches a real busy VM while the real
//! libvirtd is stopped (SIGSTOP) for 15 s. `pinsight_libvirt_up` goes to 0 within 10 s, the
//! vCPU's run time keeps growing and agrees with the kernel's schedstat over a fenced
//! interval inside the hang, the policy pauses (a reload to enforce mode during the hang
//! moves nothing), and once libvirtd continues, up is 1 again within 10 s and the policy
//! repins the misplaced VM.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::libvirtd::Stopped;
use common::policy::{operator, repins, wait_seen};
use common::{metric_value, require_host, wait_for, TestVm, VmOptions};

/// Fast ticks; the policy off (recommend) until the hang, then switched to enforce by SIGHUP.
const CONFIG: &str = "tick_seconds = 0.25\nrescan_seconds = 0.5\nlibvirt_timeout_seconds = 2.0\n\
    remote_ratio_window_seconds = 2.0\n[policy]\nopt_in = true\nmax_oversubscription = 8.0\n";

/// The QEMU process stopped (every vCPU thread with it), continued on drop: it fences an
/// interval without libvirt, which cannot pause a guest while libvirtd is stopped.
struct Frozen(u32);

impl Frozen {
    fn freeze(vm: &TestVm) -> Frozen {
        signal(vm.pid, libc::SIGSTOP);
        let tid = vm.vcpu_tid(0);
        wait_for(Duration::from_secs(5), "the vCPU thread to stop", || {
            (vm.thread_state(0) == 'T').then_some(tid)
        });
        Frozen(vm.pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: u32, sig: i32) {
    let pid = i32::try_from(pid).expect("a pid fits i32");
    // SAFETY: kill(2) only signals the QEMU process this test started.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "signal {sig} to QEMU pid {pid}");
}

fn gauge(daemon: &Daemon, name: &str) -> Option<f64> {
    metric_value(&daemon.metrics(), name, &[])
}

fn vcpu_run_seconds(metrics: &str, domain: &str) -> f64 {
    common::metric_sum(
        metrics,
        "pinsight_vcpu_run_seconds_total",
        &[("domain", domain), ("vcpu", "0")],
    )
}

#[test]
fn a_stopped_libvirtd_pauses_the_policy_but_not_the_measurements() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(operator("on")),
        ..VmOptions::busy("hang")
    });
    // On socket 0, far from the fixture GPU on node 1 (CPU 1).
    vm.pin_vcpu(0, "0");
    let domain = vm.name.clone();
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!("{CONFIG}mode = \"recommend\"\n"),
        &["--bpf-stats"],
    );
    wait_seen(&daemon, &vm);
    assert_eq!(gauge(&daemon, "pinsight_libvirt_up"), Some(1.0));
    let total = |m: &str| vcpu_run_seconds(m, &domain);

    let stopped = Stopped::stop();
    let hung_at = Instant::now();
    wait_for(Duration::from_secs(10), "pinsight_libvirt_up 0", || {
        (gauge(&daemon, "pinsight_libvirt_up") == Some(0.0)).then_some(())
    });
    let to_down = hung_at.elapsed();
    eprintln!(
        "libvirtd SIGSTOP -> pinsight_libvirt_up 0 in {:.2} s",
        to_down.as_secs_f64()
    );

    // Enforce from now on: the policy would act at once, but must wait for libvirt.
    let enforce = std::fs::read_to_string(&daemon.config)
        .expect("the daemon's config")
        .replace("mode = \"recommend\"", "mode = \"enforce\"");
    std::fs::write(&daemon.config, enforce).expect("rewrite the config");
    daemon.signal(libc::SIGHUP);

    // Run time during the hang, fenced by stopping QEMU at both ends.
    let (ours0, k0) = {
        let _frozen = Frozen::freeze(&vm);
        let (ours, _) = daemon.settled("run time of the frozen vCPU", total);
        (ours, vm.schedstat_run_ns(0))
    };
    std::thread::sleep(Duration::from_secs(4));
    let (ours1, k1, m1) = {
        let _frozen = Frozen::freeze(&vm);
        let (ours, m) = daemon.settled("run time of the frozen vCPU", total);
        (ours, vm.schedstat_run_ns(0), m)
    };
    let (ours, kernel) = (ours1 - ours0, (k1 - k0) as f64 / 1e9);
    eprintln!("run time during the hang: pinsight {ours:.6} s, schedstat {kernel:.6} s");
    assert!(
        kernel > 1.0,
        "the busy vCPU ran only {kernel:.3} s in 4 s: the test's premise failed"
    );
    common::assert_agrees_with_schedstat("run time during the hang", ours, kernel);
    assert!(
        hung_at.elapsed() < Duration::from_secs(15),
        "the fenced interval must lie inside the hang"
    );
    assert_eq!(
        metric_value(&m1, "pinsight_libvirt_up", &[]),
        Some(0.0),
        "libvirt came back up while libvirtd was stopped"
    );
    assert_eq!(metric_value(&m1, "pinsight_policy_paused", &[]), Some(1.0));
    assert_eq!(repins(&daemon, &domain, "applied"), None);
    assert_eq!(
        vm.allowed_cpus(0),
        "0",
        "the policy acted while libvirt hung"
    );
    let log = daemon.log_text();
    assert!(
        log.contains("did not return within libvirt_timeout_seconds"),
        "the hung call is not logged:\n{log}"
    );

    // 15 s in all, then libvirtd continues.
    std::thread::sleep(Duration::from_secs(15).saturating_sub(hung_at.elapsed()));
    drop(stopped);
    let back_at = Instant::now();
    wait_for(Duration::from_secs(10), "pinsight_libvirt_up 1", || {
        (gauge(&daemon, "pinsight_libvirt_up") == Some(1.0)).then_some(())
    });
    let to_up = back_at.elapsed();
    wait_for(Duration::from_secs(10), "the repin after the hang", || {
        repins(&daemon, &domain, "applied")
    });
    assert_eq!(vm.allowed_cpus(0), "1", "repinned next to the GPU");
    assert_eq!(gauge(&daemon, "pinsight_policy_paused"), Some(0.0));
    eprintln!(
        "libvirtd SIGCONT -> pinsight_libvirt_up 1 in {:.2} s, repinned {:.2} s after SIGCONT",
        to_up.as_secs_f64(),
        back_at.elapsed().as_secs_f64()
    );
}
