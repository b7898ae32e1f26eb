//! GPU interrupts on the real daemon: a real VM declaring the fixture GPU, with
//! `irq_proc_root` pointing at a /proc fragment of the kernel's shape (no VFIO device exists
//! here), shows its lines by locality and the misplaced one in /metrics and `pinsight
//! status`; a malformed /proc/interrupts is a problem naming the file and line while the VM
//! is still measured.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_value, require_host, wait_for, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";

fn proc_fixture() -> String {
    common::repo_root()
        .join("monitor/tests/fixtures/proc/two-socket-gpu")
        .display()
        .to_string()
}

#[test]
fn a_vms_gpu_interrupts_by_locality_and_a_misplaced_line() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::idle("irq")
    });
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = 0.25\nrescan_seconds = 0.5\nirq_proc_root = \"{}\"\n",
            proc_fixture()
        ),
        &[],
    );
    let domain = vm.name.as_str();
    let labels = |locality| [("domain", domain), ("gpu", GPU), ("locality", locality)];
    let m = wait_for(Duration::from_secs(20), "the VM's GPU interrupts", || {
        let m = daemon.metrics();
        metric_value(&m, "pinsight_gpu_interrupts_total", &labels("local")).map(|_| m)
    });
    assert_eq!(
        metric_value(&m, "pinsight_gpu_interrupts_total", &labels("local")),
        Some(5250.0)
    );
    assert_eq!(
        metric_value(&m, "pinsight_gpu_interrupts_total", &labels("remote")),
        Some(1010.0)
    );
    assert_eq!(
        metric_value(
            &m,
            "pinsight_gpu_irq_affinity_misplaced",
            &[("domain", domain), ("gpu", GPU)]
        ),
        Some(1.0)
    );
    let (ok, status) = common::pinsight(&["status", "--addr", &daemon.addr]);
    assert!(ok, "{status}");
    assert!(
        status.contains("GPU 0000:3b:00.0 interrupts: 2 lines")
            && status.contains("IRQ 156 -> CPU 0"),
        "status does not show the GPU's interrupts:\n{status}"
    );
}

#[test]
fn a_malformed_proc_interrupts_is_named_and_the_vm_still_measured() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::busy("irqbad")
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("interrupts"),
        "           CPU0       CPU1\n156:  12  vfio-msix[0](0000:3b:00.0)\n",
    )
    .expect("write the bad file");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = 0.25\nrescan_seconds = 0.5\nirq_proc_root = \"{}\"\n",
            dir.path().display()
        ),
        &[],
    );
    let domain = vm.name.as_str();
    wait_for(Duration::from_secs(20), "the VM's run time", || {
        let m = daemon.metrics();
        let run = common::metric_sum(
            &m,
            "pinsight_domain_run_seconds_total",
            &[("domain", domain)],
        );
        (run > 0.2).then_some(())
    });
    let json = http_get(&daemon.addr, "/status.json").expect("GET /status.json");
    let view: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let problems = view["problems"].to_string();
    let want = format!(
        "{}/interrupts: line 2: IRQ 156: no count for CPU1",
        dir.path().display()
    );
    assert!(
        problems.contains(&want),
        "no problem naming the file and line: {problems}"
    );
    assert!(!daemon.metrics().contains("pinsight_gpu_interrupts_total{"));
}
