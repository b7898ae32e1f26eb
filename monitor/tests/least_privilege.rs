//! Least privilege, as libvirt itself sees the daemon: in observe mode every connection
//! pinsight holds is read-only (libvirt refuses it every call that changes something); only
//! enforce mode opens a read-write one. And as the kernel sees it: once the probes are
//! attached, no thread of the daemon holds a capability the steady state does not need
//! (none on kernels >= 5.19), while the probes' counters keep advancing.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_sum, require_host, wait_for, TestVm, VmOptions};
use pinsight::privilege::{needed_in_steady_state, ThreadCaps};

/// `readonly` of every libvirtd client whose process is `pid`, from `virt-admin client-info`.
fn client_access(pid: u32) -> Vec<bool> {
    let list = std::process::Command::new("virt-admin")
        .args(["srv-clients-list", "libvirtd"])
        .output()
        .expect("virt-admin (libvirt-clients, installed by scripts/setup.sh)");
    let list = String::from_utf8_lossy(&list.stdout);
    let ids = list
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok());
    let mut access = Vec::new();
    for id in ids {
        let info = std::process::Command::new("virt-admin")
            .args(["client-info", "libvirtd", &id.to_string()])
            .output()
            .expect("virt-admin client-info");
        let info = String::from_utf8_lossy(&info.stdout);
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        };
        if field("unix_process_id") == Some(pid.to_string()) {
            access.push(field("readonly").as_deref() == Some("yes"));
        }
    }
    access
}

#[test]
fn observe_mode_holds_only_read_only_libvirt_connections_and_enforce_a_read_write_one() {
    require_host();
    let observe = Daemon::start(&fixture("two-socket-gpu"), "tick_seconds = 0.25\n", &[]);
    let seen = wait_for(
        Duration::from_secs(20),
        "the observe daemon's libvirt clients",
        || {
            let access = client_access(observe.pid());
            (access.len() >= 2).then_some(access)
        },
    );
    assert!(
        seen.iter().all(|read_only| *read_only),
        "observe mode holds a read-write libvirt connection: {seen:?} (true = read-only)"
    );
    drop(observe);

    let enforce = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\n[policy]\nmode = \"enforce\"\nopt_in = true\n",
        &[],
    );
    let seen = wait_for(
        Duration::from_secs(20),
        "the enforce daemon's libvirt clients",
        || {
            let access = client_access(enforce.pid());
            (access.len() >= 2).then_some(access)
        },
    );
    assert!(
        seen.iter().any(|read_only| !*read_only),
        "enforce mode has no read-write connection to act with: {seen:?}"
    );
}

/// The capability mask the daemon keeps on this kernel (0 from 5.19 on).
fn expected_mask() -> u64 {
    let release =
        std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("/proc/sys/kernel/osrelease");
    let disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    needed_in_steady_state(release.trim(), disabled)
        .iter()
        .fold(0, |mask, k| mask | k.cap.bitmask())
}

/// Asserts the process `pid` and every one of its threads hold exactly the kept set in
/// CapEff, CapPrm and CapBnd, and nothing in CapInh and CapAmb; returns the thread names.
fn assert_only_kept_capabilities(pid: u32) -> Vec<String> {
    let expected = expected_mask();
    let want = ThreadCaps {
        effective: expected,
        permitted: expected,
        inheritable: 0,
        bounding: expected,
        ambient: 0,
    };
    let process =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the daemon's status");
    assert_eq!(ThreadCaps::parse(&process), want, "/proc/{pid}/status");
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the daemon's threads") {
        let dir = task.expect("a thread entry").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue; // the thread exited meanwhile
        };
        assert_eq!(
            ThreadCaps::parse(&status),
            want,
            "{}/status ({})",
            dir.display(),
            comm.trim()
        );
        names.push(comm.trim().to_string());
    }
    names.sort();
    names
}

#[test]
fn after_attach_no_thread_holds_a_capability_and_the_counters_keep_advancing() {
    require_host();
    // The test starts the daemon as root with every capability, so all 41 must go.
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_ne!(
        ThreadCaps::parse(&own).effective,
        0,
        "precondition: the test must run as root with capabilities"
    );
    let vm = TestVm::start(VmOptions::busy("caps"));
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 0.5\n",
        &["--bpf-stats"],
    );
    let domain = vm.name.clone();
    let run_time = |m: &str| {
        metric_sum(
            m,
            "pinsight_vcpu_run_seconds_total",
            &[("domain", &domain), ("vcpu", "0")],
        )
    };
    let first = wait_for(Duration::from_secs(20), "the VM's run time", || {
        let r = run_time(&daemon.metrics());
        (r > 0.0).then_some(r)
    });
    let threads = assert_only_kept_capabilities(daemon.pid());
    for name in [
        "pinsight",
        "pinsight-engine",
        "pinsight-events",
        "tokio-rt-worker",
    ] {
        assert!(
            threads.iter().any(|t| t == name),
            "thread {name} not among {threads:?}"
        );
    }
    // After the drop the engine still reads the probes' maps and /proc of QEMU: the busy
    // vCPU's run time keeps growing.
    std::thread::sleep(Duration::from_secs(2));
    let later = run_time(&daemon.metrics());
    assert!(
        later > first + 0.5,
        "run time went from {first} to {later} in 2 s of a busy vCPU"
    );
    // A SIGHUP reload (the config file re-read) and threads started later stay dropped too.
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reload in the log", || {
        daemon
            .log_text()
            .contains("SIGHUP: configuration")
            .then_some(())
    });
    assert_only_kept_capabilities(daemon.pid());
    // Without the terminal colours the log has around "=".
    let log = daemon
        .log_text()
        .replace("\u{1b}[0m", "")
        .replace("\u{1b}[2m", "")
        .replace("\u{1b}[3m", "");
    let line = log
        .lines()
        .find(|l| l.contains("capabilities dropped on every thread"))
        .unwrap_or_else(|| panic!("no capability line in the log:\n{log}"));
    assert!(
        line.contains("CAP_SYS_ADMIN") && line.contains("CAP_BPF") && line.contains("CAP_PERFMON"),
        "{line}"
    );
    if expected_mask() == 0 {
        assert!(line.contains("kept=none"), "{line}");
    }
    // The counters are read in batch calls without a capability, too (kernel >= 5.19), not
    // by the entry-by-entry fallback.
    assert!(
        !log.contains("batch lookups of the probe maps failed"),
        "the batch read fell back after the drop:\n{log}"
    );
}
