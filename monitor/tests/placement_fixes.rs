//! The memory and interrupt fixes on a real daemon and real VMs (root; run under the VM
//! lock: an enforce daemon acts on every VM of the host).
//!
//! Interrupts: no VFIO exists here, so `irq_proc_root` points at a copy of a /proc fragment
//! of the kernel's shape (tests/fixtures/proc/irq-fix): an enforce daemon moves the
//! misplaced vfio line's affinity (the file is rewritten, an audit line says before/after),
//! `pinsight restore` puts it back, and the cooldown keeps the daemon from moving it again;
//! with an irqbalance process in the tree nothing is written and the reason is reported.
//!
//! Memory: this host has one NUMA node, so a VM's memory is on node 0 while the fixture puts
//! its GPU on node 1. The fix is recommended (recommend mode), and in enforce mode the real
//! calls are made and fail as they must on this host, with nothing half-done: migrate_pages
//! of the QEMU process to node 1 (the kernel refuses: EINVAL, node 1 has no memory), and
//! under a restrictive numatune libvirt's live nodeset change to node 1 (libvirt refuses:
//! no such node); the numatune and the memory stay where they were. A move that really
//! copies pages needs a second node and is not covered here.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_value, require_host, wait_for, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";

/// A writable copy of the interrupt fixture, plus an irqbalance process if asked.
fn proc_tree(irqbalance: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let src = common::repo_root().join("monitor/tests/fixtures/proc/irq-fix");
    copy_dir(&src, dir.path());
    if irqbalance {
        let p = dir.path().join("4242");
        std::fs::create_dir_all(&p).expect("mkdir");
        std::fs::write(p.join("comm"), "irqbalance\n").expect("comm");
        std::fs::write(p.join("cmdline"), "/usr/sbin/irqbalance\0--foreground\0").expect("cmdline");
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read the fixture").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn affinity(root: &Path, irq: u32) -> String {
    let path = root.join(format!("irq/{irq}/smp_affinity_list"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn config(mode: &str, memory: &str, irq: &str, proc_root: &Path, state: &Path) -> String {
    format!(
        "tick_seconds = 0.25\nrescan_seconds = 0.5\nirq_proc_root = \"{}\"\n\
         [policy]\nmode = \"{mode}\"\nproactive = false\nmemory = \"{memory}\"\nirq = \"{irq}\"\n\
         [qmp]\nsockets = []\nstate_dir = \"{}\"\n",
        proc_root.display(),
        state.display()
    )
}

fn irq_moves(m: &str, domain: &str, outcome: &str) -> Option<f64> {
    let labels = [("domain", domain), ("gpu", GPU), ("outcome", outcome)];
    metric_value(m, "pinsight_irq_moves_total", &labels)
}

#[test]
fn an_enforce_daemon_moves_a_misplaced_gpu_irq_and_restore_puts_it_back() {
    require_host();
    let proc_root = proc_tree(false);
    let state = tempfile::tempdir().expect("a state directory");
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::idle("irqfix")
    });
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &config("enforce", "off", "enforce", proc_root.path(), state.path()),
        &[],
    );
    let domain = vm.name.as_str();
    let line = daemon.log_line(Duration::from_secs(20), &["irq affinity moved", domain]);
    assert!(
        line.contains("IRQ 156 0 -> 1") && line.contains("delivered off its node"),
        "the audit line names before, after and why: {line}"
    );
    assert_eq!(
        affinity(proc_root.path(), 156),
        "1",
        "moved to the GPU node's CPU"
    );
    assert_eq!(
        affinity(proc_root.path(), 157),
        "1",
        "already on the GPU's node"
    );
    let m = wait_for(Duration::from_secs(10), "the applied count", || {
        let m = daemon.metrics();
        irq_moves(&m, domain, "applied").map(|_| m)
    });
    assert_eq!(irq_moves(&m, domain, "applied"), Some(1.0));
    assert_eq!(
        metric_value(&m, "pinsight_irqbalance_running", &[]),
        Some(0.0)
    );

    let config_path = daemon.config.display().to_string();
    let (ok, out) = common::pinsight(&["restore", "--config", &config_path, domain]);
    assert!(ok, "pinsight restore failed:\n{out}");
    assert!(
        out.contains("IRQ 156 1 -> 0"),
        "restore says what it put back:\n{out}"
    );
    assert_eq!(affinity(proc_root.path(), 156), "0", "restore put it back");
    // The line is misplaced again, but the VM's cooldown keeps the daemon off it.
    let m = wait_for(Duration::from_secs(10), "the cooldown verdict", || {
        let m = daemon.metrics();
        irq_moves(&m, domain, "skipped_cooldown").map(|_| m)
    });
    assert_eq!(irq_moves(&m, domain, "applied"), Some(1.0));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        affinity(proc_root.path(), 156),
        "0",
        "not moved again within the cooldown"
    );
}

#[test]
fn with_irqbalance_running_the_daemon_reports_and_does_not_write() {
    require_host();
    let proc_root = proc_tree(true);
    let state = tempfile::tempdir().expect("a state directory");
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::idle("irqbal")
    });
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &config("enforce", "off", "enforce", proc_root.path(), state.path()),
        &[],
    );
    let domain = vm.name.as_str();
    let m = wait_for(Duration::from_secs(20), "the irqbalance verdict", || {
        let m = daemon.metrics();
        irq_moves(&m, domain, "skipped_irqbalance").map(|_| m)
    });
    assert_eq!(
        metric_value(&m, "pinsight_irqbalance_running", &[]),
        Some(1.0)
    );
    assert_eq!(irq_moves(&m, domain, "applied"), None);
    assert_eq!(
        affinity(proc_root.path(), 156),
        "0",
        "irqbalance's line is not written"
    );
    let json = http_get(&daemon.addr, "/status.json").expect("GET /status.json");
    let view: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    let reason = view["fixes"]["plan"]["irq"][0]["reason"].to_string();
    assert!(
        reason.contains("irqbalance (pid 4242) runs") && reason.contains("--banirq=156"),
        "the reason says irqbalance runs and how to ban the IRQ: {reason}"
    );
    assert!(!state
        .path()
        .join(format!("fixes-{}.json", vm.uuid))
        .exists());
}

fn memory_labels<'a>(domain: &'a str, outcome: &'static str) -> Vec<(&'static str, &'a str)> {
    vec![("domain", domain), ("outcome", outcome)]
}

/// Bytes of `vm`'s memory cgroup per node, as the kernel counts them (memory.numa_stat).
fn node_pages(vm: &TestVm) -> String {
    let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", vm.pid)).expect("cgroup");
    let path = cgroup
        .lines()
        .find_map(|l| l.split_once(":memory:").map(|(_, p)| p.to_string()))
        .expect("a v1 memory cgroup (this machine kind)");
    let stat = PathBuf::from("/sys/fs/cgroup/memory")
        .join(path.trim_start_matches('/'))
        .join("memory.numa_stat");
    let text = std::fs::read_to_string(&stat).unwrap_or_else(|e| panic!("{}: {e}", stat.display()));
    let total = text.lines().next().unwrap_or_default().to_string();
    // One node here: the first line is "total=P N0=P"; no N1 field can exist.
    assert!(!total.contains("N1="), "{total}");
    total
}

#[test]
fn the_memory_fix_is_recommended_and_on_this_one_node_host_enforce_changes_nothing() {
    require_host();
    let proc_root = proc_tree(false);
    let state = tempfile::tempdir().expect("a state directory");
    // vCPUs pinned by the GPU (CPU 1 is node 1 in the fixture); memory on node 0 (real).
    let plain = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        vcpu_cpuset: Some("1".into()),
        preallocated_mib: Some(256),
        ..VmOptions::idle("memfix")
    });
    let restrictive = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata(GPU)),
        vcpu_cpuset: Some("1".into()),
        numatune_xml: Some("<numatune><memory mode='restrictive' nodeset='0'/></numatune>"),
        ..VmOptions::idle("memrestr")
    });
    let recommend = Daemon::start(
        &fixture("two-socket-gpu"),
        &config(
            "recommend",
            "enforce",
            "off",
            proc_root.path(),
            state.path(),
        ),
        &[],
    );
    let m = wait_for(
        Duration::from_secs(20),
        "both memory recommendations",
        || {
            let m = recommend.metrics();
            let r = |vm: &TestVm| {
                metric_value(
                    &m,
                    "pinsight_memory_move_recommended",
                    &[("domain", &vm.name)],
                )
            };
            (r(&plain).is_some() && r(&restrictive).is_some()).then_some(m)
        },
    );
    assert_eq!(
        metric_value(
            &m,
            "pinsight_memory_moves_total",
            &memory_labels(&plain.name, "recommended")
        ),
        Some(1.0)
    );
    let (ok, plan) = common::pinsight(&[
        "plan",
        "--config",
        &recommend.config.display().to_string(),
        "--addr",
        &recommend.addr,
    ]);
    assert!(ok, "{plan}");
    let line = |vm: &TestVm| {
        plan.lines()
            .find(|l| l.contains(&vm.name) && l.contains("memory ["))
            .unwrap_or_else(|| panic!("no memory fix of {} in the plan:\n{plan}", vm.name))
            .to_string()
    };
    let p = line(&plain);
    assert!(
        p.contains("migrate_pages 0 -> 1")
            && p.contains("100% of its memory")
            && p.contains("only under policy.mode"),
        "{p}"
    );
    assert!(
        line(&restrictive).contains("numatune 0 -> 1"),
        "{}",
        line(&restrictive)
    );
    drop(recommend);

    let before = node_pages(&plain);
    let enforce = Daemon::start(
        &fixture("two-socket-gpu"),
        &config("enforce", "enforce", "off", proc_root.path(), state.path()),
        &[],
    );
    let failed = enforce.log_line(Duration::from_secs(20), &["memory not moved", &plain.name]);
    assert!(
        failed.contains("migrate_pages(pid")
            && failed.contains("nodes 0 -> 1")
            && failed.contains("Invalid argument")
            && failed.contains("nothing changed"),
        "the real call's error, and that nothing moved: {failed}"
    );
    let refused = enforce.log_line(
        Duration::from_secs(20),
        &["memory not moved", &restrictive.name],
    );
    assert!(
        refused.contains("numatune nodeset to 1 failed") && refused.contains("nothing changed"),
        "libvirt's refusal: {refused}"
    );
    let m = wait_for(Duration::from_secs(10), "the failed counts", || {
        let m = enforce.metrics();
        let n = |vm: &TestVm| {
            metric_value(
                &m,
                "pinsight_memory_moves_total",
                &memory_labels(&vm.name, "failed"),
            )
        };
        (n(&plain) == Some(1.0) && n(&restrictive) == Some(1.0)).then_some(m)
    });
    assert_eq!(
        metric_value(
            &m,
            "pinsight_memory_moves_total",
            &memory_labels(&plain.name, "applied")
        ),
        None
    );
    // Nothing half-done: the numatune is as it was, the memory still all on node 0, and the
    // record keeps no move to undo (only the cooldown's time).
    let numatune = common::virsh_ok(&["numatune", &restrictive.name]);
    assert!(
        numatune.contains("restrictive") && numatune.contains(": 0"),
        "{numatune}"
    );
    let after = node_pages(&plain);
    assert!(after.contains(" N0="), "{before} / {after}");
    for vm in [&plain, &restrictive] {
        let record = std::fs::read_to_string(state.path().join(format!("fixes-{}.json", vm.uuid)))
            .expect("the record with the cooldown time");
        assert!(record.contains("\"memory\": null"), "{record}");
        let (ok, out) = common::pinsight(&[
            "restore",
            "--config",
            &enforce.config.display().to_string(),
            &vm.name,
        ]);
        assert!(!ok && out.contains("nothing to restore"), "{out}");
    }
    // The cooldown keeps the daemon from trying again every tick.
    std::thread::sleep(Duration::from_secs(2));
    let m = enforce.metrics();
    assert_eq!(
        metric_value(
            &m,
            "pinsight_memory_moves_total",
            &memory_labels(&plain.name, "failed")
        ),
        Some(1.0)
    );
}
