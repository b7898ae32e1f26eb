//! Crash-safe remediation on the real host (real KVM guests under libvirtd, the real daemon,
//! the two-socket fixture: CPU 0 = socket 0, CPU 1 = socket 1 with GPU 0000:3b:00.0). A
//! 2-vCPU VM confined to CPU 0 is repinned by a daemon in enforce mode with the test-only
//! pause between pin calls; the daemon is killed with SIGKILL right after its first pin call,
//! so the VM is half moved. The state element then says "in progress" with the pins from
//! before pinsight acted, and the next daemon completes the action (targets still valid) or
//! rolls it back (targets now reserved), on a transient and on a persistent domain; the pins
//! recorded as original are always the ones from before pinsight ever acted. Also: with
//! `policy.persistent = true` on a defined domain, the repin and `pinsight restore` reach the
//! inactive config.
//!
//! The daemons run with `policy.opt_in = true`, so VMs of other tests are never moved.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::policy::operator;
use common::{pinsight, require_host, wait_for, TestVm, VmOptions};
use pinsight::cpuset::CpuSet;
use pinsight::policy::record::{ActionKind, ActionResult, Record};

const STATE_NS: &str = "urn:pinsight:state:1";

/// Fast ticks; room on CPU 1 whatever other tests pin there.
const TEST_CONFIG: &str = "tick_seconds = 0.25\nrescan_seconds = 0.5\n\
    remote_ratio_window_seconds = 2.0\n[policy]\nmode = \"enforce\"\nopt_in = true\n\
    max_oversubscription = 8.0\n";

/// Long enough that the kill surely lands between the first and the second pin call.
const PAUSE_MS: &str = "5000";

fn cpus(list: &str) -> CpuSet {
    list.parse().expect("a CPU list")
}

/// A 2-vCPU VM opted in, both vCPUs (and the emulator) confined to CPU 0: the far socket.
fn misplaced(hint: &'static str, persistent: bool) -> TestVm {
    let opts = VmOptions {
        metadata_xml: Some(operator("on")),
        vcpu_cpuset: Some("0".into()),
        ..VmOptions::idle(hint)
    };
    let vm = if persistent {
        TestVm::start_defined(opts)
    } else {
        TestVm::start(opts)
    };
    assert_eq!(
        (vm.allowed_cpus(0), vm.allowed_cpus(1)),
        ("0".into(), "0".into())
    );
    vm
}

/// pinsight's record of `vm`, from its live metadata.
fn record_of(vm: &TestVm) -> Record {
    let xml = vm
        .metadata(STATE_NS)
        .unwrap_or_else(|| panic!("no {STATE_NS} element on {}", vm.name));
    Record::parse(&xml).unwrap_or_else(|e| panic!("{e}\n{xml}"))
}

/// Starts an enforce daemon with the pause between pin calls, kills it with SIGKILL as soon
/// as it logs its first pin call on `vm`, and returns the moment of the kill.
fn kill_mid_repin(vm: &TestVm, config: &str) -> Instant {
    let env = [("PINSIGHT_TEST_PAUSE_BETWEEN_PINS_MS", PAUSE_MS)];
    let mut daemon = Daemon::start_with_env(&fixture("two-socket-gpu"), config, &[], &env);
    let line = daemon.log_line(
        Duration::from_secs(30),
        &["pin call made", &vm.name, "made=1"],
    );
    daemon.signal(libc::SIGKILL);
    let killed = Instant::now();
    daemon
        .wait_exit(Duration::from_secs(5))
        .expect("the daemon dies of SIGKILL");
    eprintln!("killed after: {line}");
    // Half moved: vCPU 0 on the GPU's socket, vCPU 1 still where it was.
    assert_eq!(
        (vm.allowed_cpus(0), vm.allowed_cpus(1)),
        ("1".into(), "0".into())
    );
    let record = record_of(vm);
    assert_eq!(record.uuid.as_deref(), Some(vm.uuid.as_str()));
    let last = record
        .in_progress()
        .unwrap_or_else(|| panic!("no action in progress in {record:?}"));
    assert_eq!(last.action, ActionKind::Repin);
    assert_eq!(last.vcpus[&0], (cpus("0"), cpus("1")), "{last:?}");
    assert_eq!(last.vcpus[&1], (cpus("0"), cpus("1")), "{last:?}");
    assert_original_is_from_before_pinsight(&record);
    killed
}

/// The pins recorded as original are the ones the VM had before pinsight ever acted.
fn assert_original_is_from_before_pinsight(record: &Record) {
    let original = record.original.as_ref().expect("the original pins");
    assert_eq!(
        original.vcpus,
        BTreeMap::from([(0, cpus("0")), (1, cpus("0"))]),
        "{record:?}"
    );
    assert_eq!(original.emulator, Some(cpus("0")), "{record:?}");
}

/// Restarts the daemon with `config` and waits for its reconciled log line; prints and
/// returns the time from `killed`.
fn restart_and_reconcile(vm: &TestVm, config: &str, killed: Instant, outcome: &str) -> Daemon {
    let daemon = Daemon::spawn(&fixture("two-socket-gpu"), config, &[]);
    let line = daemon.log_line(
        Duration::from_secs(30),
        &["reconciled an interrupted action", &vm.name],
    );
    let took = killed.elapsed().as_secs_f64();
    eprintln!("RECONCILE_SECONDS {took:.3} (kill -9 -> restart -> reconciled log line)");
    assert!(
        line.contains(&format!("outcome=\"{outcome}\""))
            || line.contains(&format!("outcome={outcome}")),
        "{line}"
    );
    daemon
}

#[test]
fn kill_9_between_two_pin_calls_is_completed_at_restart() {
    require_host();
    let vm = misplaced("journal-done", false);
    let killed = kill_mid_repin(&vm, TEST_CONFIG);
    let daemon = restart_and_reconcile(&vm, TEST_CONFIG, killed, "completed");
    // All planned: both vCPUs on the GPU's socket, the action marked applied.
    wait_for(Duration::from_secs(5), "both vCPUs on CPU 1", || {
        (vm.allowed_cpus(0) == "1" && vm.allowed_cpus(1) == "1").then_some(())
    });
    let record = record_of(&vm);
    let last = record.last.clone().expect("the last action");
    assert_eq!(last.result, ActionResult::Applied, "{last:?}");
    assert!(
        last.reason.contains("interrupted after 1 of 3 pins")
            && last.reason.contains("completed by reconcile"),
        "{}",
        last.reason
    );
    assert_original_is_from_before_pinsight(&record);
    // The completed action is the VM's last: nothing more is done to it.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        (vm.allowed_cpus(0), vm.allowed_cpus(1)),
        ("1".into(), "1".into())
    );
    assert_eq!(record_of(&vm), record, "{}", daemon.log_text());
}

#[test]
fn kill_9_then_targets_reserved_rolls_back_live_and_inactive() {
    require_host();
    let vm = misplaced("journal-back", true);
    let config = TEST_CONFIG.replace("[policy]\n", "[policy]\npersistent = true\n");
    let killed = kill_mid_repin(&vm, &config);
    // The first pin call reached the inactive config too.
    let inactive = vm.inactive_xml();
    assert!(
        inactive.contains("<vcpupin vcpu='0' cpuset='1'/>"),
        "{inactive}"
    );
    assert!(inactive.contains("state=\"in_progress\""), "{inactive}");
    // CPU 1 is reserved from now on: the plan cannot be completed.
    let reserved = config.replace("[policy]\n", "[policy]\nreserved_cpus = \"1\"\n");
    let daemon = restart_and_reconcile(&vm, &reserved, killed, "rolled_back");
    // All original, live and in the inactive config.
    assert_eq!(
        (vm.allowed_cpus(0), vm.allowed_cpus(1)),
        ("0".into(), "0".into())
    );
    let inactive = vm.inactive_xml();
    assert!(
        inactive.contains("<vcpupin vcpu='0' cpuset='0'/>") && !inactive.contains("cpuset='1'"),
        "{inactive}"
    );
    let record = record_of(&vm);
    let last = record.last.clone().expect("the last action");
    assert_eq!(last.result, ActionResult::RolledBack, "{last:?}");
    assert!(
        last.reason.contains("CPUs 1 are now reserved"),
        "{}",
        last.reason
    );
    assert_original_is_from_before_pinsight(&record);
    assert!(inactive.contains("result=\"rolled_back\""), "{inactive}");
    drop(daemon);
}

#[test]
fn persistent_pins_reach_the_inactive_config_and_restore_puts_it_back() {
    require_host();
    let vm = misplaced("journal-persist", true);
    let config = TEST_CONFIG.replace("[policy]\n", "[policy]\npersistent = true\n");
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config, &[]);
    wait_for(Duration::from_secs(20), "both vCPUs on CPU 1", || {
        (vm.allowed_cpus(0) == "1" && vm.allowed_cpus(1) == "1").then_some(())
    });
    let inactive = vm.inactive_xml();
    for want in [
        "<vcpupin vcpu='0' cpuset='1'/>",
        "<vcpupin vcpu='1' cpuset='1'/>",
        "<emulatorpin cpuset='1'/>",
        "result=\"applied\"",
    ] {
        assert!(inactive.contains(want), "no {want} in\n{inactive}");
    }
    let cli = daemon.config.to_str().expect("UTF-8 temp path");
    let (ok, restored) = pinsight(&["restore", "-c", cli, &vm.name]);
    assert!(ok && restored.contains("restore applied"), "{restored}");
    assert_eq!(
        (vm.allowed_cpus(0), vm.allowed_cpus(1)),
        ("0".into(), "0".into())
    );
    let inactive = vm.inactive_xml();
    for want in [
        "<vcpupin vcpu='0' cpuset='0'/>",
        "<vcpupin vcpu='1' cpuset='0'/>",
        "<emulatorpin cpuset='0'/>",
        "action=\"restore\"",
    ] {
        assert!(inactive.contains(want), "no {want} in\n{inactive}");
    }
    assert!(!inactive.contains("cpuset='1'"), "{inactive}");
}
