//! Enforce mode on a QEMU without libvirt, end to end on the real host: a
//! `qemu-system-x86_64` started here with KVM, the busy guest and a QMP socket (no libvirt
//! domain), every thread confined with `taskset -a` to CPU 0 (socket 0 of the two-socket
//! fixture, whose GPU 0000:3b:00.0 sits on node 1 = CPU 1). The daemon repins it with
//! sched_setaffinity and keeps its record in a state file under a temporary `[qmp]
//! state_dir`; `pinsight restore` puts every thread back and removes the file; a daemon
//! killed with SIGKILL between its two pin calls leaves the record in progress, and the next
//! one completes it; a QEMU that exits after that leaves a file the next daemon removes; a
//! corrupt file keeps the VM where it is and is a problem line naming the file.
//!
//! Run under /work/vmtest.lock: an enforce daemon acts on every GPU VM it sees.

mod common;
// Shared with qmp.rs, which uses the rest of it.
#[allow(dead_code)]
#[path = "qmp/qemu.rs"]
mod qemu;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_value, pinsight, require_host, wait_for};
use pinsight::cpuset::CpuSet;
use pinsight::policy::record::{ActionKind, ActionResult};
use pinsight::remediate::state_file::{self, StateFile};
use qemu::{uuid, QemuVm};

const GPU: &str = "0000:3b:00.0";
/// Long enough that the kill surely lands between the first and the second pin call.
const PAUSE_MS: &str = "5000";

fn cpus(list: &str) -> CpuSet {
    list.parse().expect("a CPU list")
}

/// The busy 1-vCPU QEMU with all of its threads on CPU 0, the far socket.
fn misplaced(hint: &str) -> QemuVm {
    let vm = QemuVm::start(hint, false);
    let out = Command::new("taskset")
        .args(["-apc", "0", &vm.pid().to_string()])
        .output()
        .expect("run taskset");
    assert!(out.status.success(), "taskset -a: {out:?}");
    assert_eq!(affinity(&vm, vm.vcpu_tid), "0");
    assert_eq!(affinity(&vm, vm.pid()), "0");
    vm
}

/// Cpus_allowed_list of thread `tid` of `vm`.
fn affinity(vm: &QemuVm, tid: u32) -> String {
    let path = format!("/proc/{}/task/{tid}/status", vm.pid());
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|l| l.trim().to_string())
        .unwrap_or_else(|| panic!("no Cpus_allowed_list in {path}"))
}

fn config(vm: &QemuVm, state_dir: &Path) -> String {
    format!(
        "tick_seconds = 0.25\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n\
         [policy]\nmode = \"enforce\"\nmax_oversubscription = 8.0\n\
         [qmp]\nsockets = [{:?}]\ntimeout_seconds = 1.0\nstate_dir = {:?}\n\
         [qmp.gpus]\n\"{}\" = [\"{GPU}\"]\n",
        vm.qmp.display().to_string(),
        state_dir.display().to_string(),
        vm.name
    )
}

/// The state file of `vm` (keyed by the UUID the test gave it).
fn state_path(dir: &Path, n: &str) -> PathBuf {
    dir.join(format!("qmp-{n}.json"))
}

fn read_state(path: &Path) -> StateFile {
    state_file::read(path)
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("no state file {}", path.display()))
}

/// The UUID QemuVm gave `vm` (its name ends in its counter).
fn uuid_of(vm: &QemuVm) -> String {
    let n: u32 = vm
        .name
        .rsplit('-')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("the counter at the end of the VM's name");
    uuid(n)
}

#[test]
fn enforce_repins_a_qemu_without_libvirt_and_restore_puts_it_back() {
    require_host();
    let vm = misplaced("enforce");
    let state = tempfile::tempdir().expect("a state directory");
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config(&vm, state.path()), &[]);
    wait_for(Duration::from_secs(30), "the vCPU on CPU 1", || {
        (affinity(&vm, vm.vcpu_tid) == "1").then_some(())
    });
    let line = daemon.log_line(Duration::from_secs(5), &["repinned", &vm.name]);
    eprintln!("{line}");
    // Enforce mode with [qmp] sockets keeps CAP_SYS_NICE (bit 23) and says why.
    let caps = daemon.log_line(Duration::from_secs(5), &["capabilities dropped"]);
    assert!(
        caps.contains("CAP_SYS_NICE (policy.mode is enforce"),
        "{caps}"
    );
    let status = std::fs::read_to_string(format!("/proc/{}/status", daemon.pid())).unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .expect("CapEff");
    assert_eq!(eff & (1 << 23), 1 << 23, "CapEff {eff:x}");
    // The emulator threads went with it.
    wait_for(
        Duration::from_secs(5),
        "QEMU's main thread on CPU 1",
        || (affinity(&vm, vm.pid()) == "1").then_some(()),
    );
    let path = state_path(state.path(), &uuid_of(&vm));
    let file = read_state(&path);
    assert_eq!((file.pid, file.vm.as_str()), (vm.pid(), vm.name.as_str()));
    let last = file.record.last.clone().expect("the last action");
    assert_eq!(
        (last.action, last.result),
        (ActionKind::Repin, ActionResult::Applied)
    );
    assert_eq!(last.vcpus[&0], (cpus("0"), cpus("1")), "{last:?}");
    let original = file.record.original.clone().expect("the original pins");
    assert_eq!(original.vcpus[&0], cpus("0"), "{original:?}");
    assert_eq!(original.emulator, Some(cpus("0")), "{original:?}");
    let applied = wait_for(Duration::from_secs(5), "repins_total applied", || {
        let m = daemon.metrics();
        metric_value(
            &m,
            "pinsight_repins_total",
            &[("domain", &vm.name), ("result", "applied")],
        )
    });
    assert_eq!(applied, 1.0);
    let m = daemon.metrics();
    assert!(
        metric_value(
            &m,
            "pinsight_repins_total",
            &[("domain", &vm.name), ("result", "skipped_unmanaged")]
        )
        .is_none(),
        "{m}"
    );
    // The record is seen again at each rescan and nothing more is done (one action).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(read_state(&path), file, "{}", daemon.log_text());

    let cli = daemon.config.to_str().expect("UTF-8 temp path");
    let (ok, restored) = pinsight(&["restore", "-c", cli, &vm.name]);
    assert!(
        ok && restored.contains("restore applied: vCPU 0 1 -> 0"),
        "{restored}"
    );
    assert_eq!(affinity(&vm, vm.vcpu_tid), "0");
    assert_eq!(affinity(&vm, vm.pid()), "0");
    assert!(!path.exists(), "{} still there", path.display());
    // The daemon's cooldown keeps it from redoing it at once.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(affinity(&vm, vm.vcpu_tid), "0", "{}", daemon.log_text());
    let (ok, again) = pinsight(&["restore", "-c", cli, &vm.name]);
    assert!(!ok && again.contains("nothing to restore"), "{again}");
    let (_, help) = pinsight(&["restore", "--help"]);
    assert!(help.contains("QMP") && help.contains("state_dir"), "{help}");
}

#[test]
fn kill_9_between_the_pin_calls_is_completed_and_an_exited_qemu_leaves_no_record() {
    require_host();
    let mut vm = misplaced("journal");
    let state = tempfile::tempdir().expect("a state directory");
    let config = config(&vm, state.path());
    let env = [("PINSIGHT_TEST_PAUSE_BETWEEN_PINS_MS", PAUSE_MS)];
    let mut daemon = Daemon::start_with_env(&fixture("two-socket-gpu"), &config, &[], &env);
    let line = daemon.log_line(
        Duration::from_secs(30),
        &["pin call made", &vm.name, "made=1"],
    );
    daemon.signal(libc::SIGKILL);
    daemon
        .wait_exit(Duration::from_secs(5))
        .expect("the daemon dies of SIGKILL");
    eprintln!("killed after: {line}");
    // Half moved: the vCPU on the GPU's socket, the emulator threads not yet.
    assert_eq!(affinity(&vm, vm.vcpu_tid), "1");
    assert_eq!(affinity(&vm, vm.pid()), "0");
    let path = state_path(state.path(), &uuid_of(&vm));
    let file = read_state(&path);
    let last = file
        .record
        .in_progress()
        .unwrap_or_else(|| panic!("no action in progress in {file:?}"));
    assert_eq!(last.vcpus[&0], (cpus("0"), cpus("1")), "{last:?}");
    let original = file.record.original.clone().expect("the original pins");
    assert_eq!(original.vcpus[&0], cpus("0"));
    drop(daemon);

    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config, &[]);
    let line = daemon.log_line(
        Duration::from_secs(30),
        &["reconciled an interrupted action", &vm.name],
    );
    assert!(line.contains("completed"), "{line}");
    wait_for(
        Duration::from_secs(5),
        "QEMU's main thread on CPU 1",
        || (affinity(&vm, vm.pid()) == "1").then_some(()),
    );
    assert_eq!(affinity(&vm, vm.vcpu_tid), "1");
    let file = read_state(&path);
    let last = file.record.last.clone().expect("the last action");
    assert_eq!(last.result, ActionResult::Applied, "{last:?}");
    assert!(
        last.reason.contains("interrupted after 1 of 2 pins"),
        "{}",
        last.reason
    );
    assert_eq!(file.record.original, Some(original));
    drop(daemon);

    // The QEMU exits: its record says nothing about anything running, and goes.
    vm.kill();
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config, &[]);
    daemon.log_line(
        Duration::from_secs(10),
        &["removed the state file of a QEMU that exited"],
    );
    assert!(!path.exists(), "{} still there", path.display());
}

#[test]
fn a_corrupt_state_file_keeps_the_vm_where_it_is_and_names_the_file() {
    require_host();
    let vm = misplaced("corrupt");
    let state = tempfile::tempdir().expect("a state directory");
    let path = state_path(state.path(), &uuid_of(&vm));
    std::fs::write(&path, b"{\"format\": 1, \"vm\": \"x\", not json").expect("write");
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config(&vm, state.path()), &[]);
    let file = path.display().to_string();
    wait_for(Duration::from_secs(20), "a problem naming the file", || {
        let status = http_get(&daemon.addr, "/status.json").ok()?;
        status.contains(&file).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(affinity(&vm, vm.vcpu_tid), "0", "{}", daemon.log_text());
    assert_eq!(
        std::fs::read(&path).expect("the file is left as it was"),
        b"{\"format\": 1, \"vm\": \"x\", not json"
    );
}
