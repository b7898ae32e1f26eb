//! Shared helpers for pinsight's root integration tests: host preconditions, real KVM VMs under
//! libvirt (`TestVm`), the busy test guest, reading Prometheus text, HTTP GET, and `perf stat`
//! as an independent counter. Include with `mod common;`.
#![allow(dead_code, unused_imports)]

mod agreement;
/// A real `pinsight run` process (needs the crate's `pinsight` binary and libc).
pub mod daemon;
mod guest;
mod http;
pub mod libvirtd;
/// `perf stat` counting one tracepoint in one thread, for agreement tests.
pub mod perf;
pub mod policy;
mod prom;
mod qemu_threads;
mod stale;
/// This process's threads: ids, run-time clock, pinning, CPU cgroups.
pub mod thread;
mod virsh;
mod vm;

pub use agreement::{assert_agrees_with_schedstat, AGREEMENT_SLACK_SECONDS};
pub use guest::{spin_guest, VmOptions, DEFAULT_SPIN_ITERATIONS, IDLE_VCPUS};
pub use http::{http_get, http_get_query};
pub use prom::{metric_sum, metric_value};
pub use qemu_threads::parse_cpu_list;
pub use virsh::{virsh, virsh_ok};
pub use vm::{domain_exists, TestVm};

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// libvirt connection every helper uses: the system QEMU driver, like the daemon.
pub const LIBVIRT_URI: &str = "qemu:///system";

/// Fails the test unless this host can run the root integration tests; never skips.
pub fn require_host() {
    let mut missing = Vec::new();
    match effective_uid() {
        Some(0) => {}
        Some(uid) => missing.push(format!("not running as root (euid {uid})")),
        None => missing.push("cannot read the euid from /proc/self/status".to_string()),
    }
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        missing.push(format!("/dev/kvm is not usable: {e}"));
    }
    match Command::new("virsh")
        .args(["-c", LIBVIRT_URI, "version"])
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => missing.push(format!(
            "`virsh -c {LIBVIRT_URI} version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => missing.push(format!("cannot run virsh: {e}")),
    }
    if !tracefs_mounted() {
        missing.push("tracefs is not mounted at /sys/kernel/tracing".to_string());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        missing.push("kernel BTF /sys/kernel/btf/vmlinux is missing".to_string());
    }
    if !missing.is_empty() {
        panic!(
            "this host cannot run pinsight's root integration tests:\n  - {}\n\
             fix: run `sudo scripts/setup.sh` from the repository root (installs libvirt, QEMU, \
             perf, mounts tracefs, starts libvirtd) and run the tests as root",
            missing.join("\n  - ")
        );
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    // "Uid:\treal\teffective\tsaved\tfs"
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn tracefs_mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts.lines().any(|l| {
        let mut fields = l.split_whitespace();
        let (_dev, dir, fstype) = (fields.next(), fields.next(), fields.next());
        dir == Some("/sys/kernel/tracing") && fstype == Some("tracefs")
    })
}

/// Repository root: `$PINSIGHT_REPO_ROOT` if set, else `CARGO_MANIFEST_DIR/..`.
pub fn repo_root() -> PathBuf {
    match std::env::var_os("PINSIGHT_REPO_ROOT") {
        Some(root) => PathBuf::from(root),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("CARGO_MANIFEST_DIR has a parent (the workspace root)")
            .to_path_buf(),
    }
}

/// Where the probes see CPUs in the two-socket fixture (CPU 0 on socket 0, CPU 1 on socket 1),
/// for tests that load the probes themselves.
pub fn two_socket_topo(
) -> std::collections::BTreeMap<u32, monitor_common::sched_migrate_task::CpuTopo> {
    let root = daemon::fixture("two-socket-gpu");
    pinsight::topology::Topology::read(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .cpu_topo()
}

/// Polls `f` every 100 ms until it returns `Some`; panics naming `what` after `timeout`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener
        .local_addr()
        .expect("local_addr of a bound listener")
        .port()
}

/// The operator's metadata element declaring one GPU, as an integration test VM carries it.
pub fn gpu_metadata(address: &str) -> String {
    format!(
        "<pinsight:domain xmlns:pinsight=\"urn:pinsight:domain:1\"><pinsight:gpu address=\"{address}\"/></pinsight:domain>"
    )
}

/// Runs the `pinsight` binary under test; returns whether it succeeded and stdout+stderr.
pub fn pinsight(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_pinsight"))
        .args(args)
        .output()
        .expect("run pinsight");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Stops a child process this test started: SIGTERM so it can clean up (a daemon detaches its
/// probes), up to 5 s to exit, then SIGKILL; always reaped.
pub fn stop_child(child: &mut std::process::Child) {
    // SAFETY: kill on the pid of a child we spawned and have not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}
