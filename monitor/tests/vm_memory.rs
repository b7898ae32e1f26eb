//! Where a VM's memory sits, on real VMs: each guest's 1 GiB is preallocated by QEMU on this
//! machine's only node (node 0). On the two-socket fixture, a VM declaring GPU 0000:3b:00.0
//! (node 1) has its memory 100% remote; one declaring 0000:af:00.0 (node 0) has it local.
//! pinsight's bytes (the memory cgroup's memory.numa_stat) agree within 2% with the pages of
//! the QEMU process's anonymous mappings in /proc/PID/numa_maps, and with its guest RAM
//! mapping alone: the cgroup's `file` count is 0 here (QEMU's libraries are charged to
//! whoever read them first), so its total is its anonymous pages, which are the guest's RAM
//! plus QEMU's own heap.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_value, require_host, wait_for, TestVm, VmOptions};

/// Bytes per node of `pid`'s anonymous mappings, and of its largest one (the guest's RAM).
fn numa_maps_anon(pid: u32) -> (u64, u64) {
    numa_maps_bytes(pid, false)
}

/// Bytes of `pid`'s mappings (file-backed ones too when `files`), and of its largest one.
fn numa_maps_bytes(pid: u32, files: bool) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/numa_maps")).expect("numa_maps");
    let (mut anon, mut largest) = (0u64, 0u64);
    for line in text.lines().filter(|l| files || !l.contains(" file=")) {
        let page_kb: u64 = line
            .split_whitespace()
            .find_map(|f| f.strip_prefix("kernelpagesize_kB="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        let pages: u64 = line
            .split_whitespace()
            .filter_map(|f| f.strip_prefix('N')?.split_once('='))
            .filter_map(|(_, n)| n.parse::<u64>().ok())
            .sum();
        let bytes = pages * page_kb * 1024;
        anon += bytes;
        largest = largest.max(bytes);
    }
    (anon, largest)
}

fn within(ours: f64, theirs: f64, share: f64) -> bool {
    (ours - theirs).abs() <= share * theirs
}

#[test]
fn memory_locality_follows_the_gpus_node_and_agrees_with_numa_maps() {
    require_host();
    let far = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:3b:00.0")),
        preallocated_mib: Some(1024),
        ..VmOptions::idle("memfar")
    });
    let near = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:af:00.0")),
        preallocated_mib: Some(1024),
        ..VmOptions::idle("memnear")
    });
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 0.5\n",
        &[],
    );
    let bytes = |m: &str, vm: &TestVm, locality| {
        metric_value(
            m,
            "pinsight_domain_memory_bytes",
            &[("domain", &vm.name), ("locality", locality)],
        )
    };
    let m = wait_for(Duration::from_secs(20), "both VMs' memory", || {
        let m = daemon.metrics();
        (bytes(&m, &far, "remote").is_some() && bytes(&m, &near, "local").is_some()).then_some(m)
    });
    let ratio = |vm: &TestVm| {
        metric_value(
            &m,
            "pinsight_domain_memory_remote_ratio",
            &[("domain", &vm.name)],
        )
    };
    assert_eq!(
        ratio(&far),
        Some(1.0),
        "GPU on node 1, memory on node 0:\n{m}"
    );
    assert_eq!(
        ratio(&near),
        Some(0.0),
        "GPU on node 0, memory on node 0:\n{m}"
    );
    assert_eq!(bytes(&m, &far, "local"), Some(0.0));
    assert_eq!(bytes(&m, &near, "remote"), Some(0.0));

    // Read numa_maps right after a publish; the guests are idle and fully preallocated, so
    // their memory does not move in between.
    let ours = bytes(&m, &far, "remote").expect("remote bytes of the far VM");
    let (anon, ram) = numa_maps_anon(far.pid);
    eprintln!(
        "far VM: pinsight {} MiB on node 0; numa_maps anonymous {} MiB, guest RAM {} MiB",
        ours / 1048576.0,
        anon >> 20,
        ram >> 20
    );
    assert!(
        ram >= 1000 << 20,
        "the guest's RAM is not preallocated ({} MiB)",
        ram >> 20
    );
    assert!(
        within(ours, anon as f64, 0.02),
        "pinsight {ours} B vs numa_maps anonymous {anon} B: more than 2% apart"
    );
    assert!(
        within(ours, ram as f64, 0.02),
        "pinsight {ours} B vs the guest RAM mapping {ram} B: more than 2% apart"
    );
}

/// A host whose memory cgroups cannot be read (here: `cgroup_root` points at an empty
/// directory) falls back to the VM's numa_maps, says so in pinsight_domain_memory_source, and
/// gets the same picture: all of the far VM's memory remote, within 2% of the guest's RAM.
#[test]
fn without_a_memory_cgroup_numa_maps_is_the_fallback_and_says_so() {
    require_host();
    let far = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:3b:00.0")),
        preallocated_mib: Some(512),
        ..VmOptions::idle("memwalk")
    });
    let empty = tempfile::tempdir().expect("a scratch directory");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = 0.25\nrescan_seconds = 0.5\nnuma_maps_fallback_seconds = 1\n\
             cgroup_root = {:?}\n",
            empty.path()
        ),
        &[],
    );
    let source = |m: &str, source| {
        metric_value(
            m,
            "pinsight_domain_memory_source",
            &[("domain", &far.name), ("source", source)],
        )
    };
    let m = wait_for(
        Duration::from_secs(20),
        "the VM's memory from numa_maps",
        || {
            let m = daemon.metrics();
            (source(&m, "numa_maps") == Some(1.0)).then_some(m)
        },
    );
    assert_eq!(source(&m, "cgroup"), None, "{m}");
    let remote = metric_value(
        &m,
        "pinsight_domain_memory_bytes",
        &[("domain", &far.name), ("locality", "remote")],
    )
    .expect("remote bytes");
    // The fallback counts every mapping (QEMU's heap and libraries too), as this does.
    let (all, ram) = numa_maps_bytes(far.pid, true);
    eprintln!(
        "far VM from numa_maps: pinsight {} MiB remote; numa_maps {} MiB in all, guest RAM {} MiB",
        remote / 1048576.0,
        all >> 20,
        ram >> 20
    );
    assert!(ram >= 500 << 20, "the guest's RAM is not preallocated");
    assert!(
        remote >= ram as f64 && within(remote, all as f64, 0.02),
        "pinsight {remote} B vs numa_maps {all} B (guest RAM {ram} B)"
    );
    assert_eq!(
        metric_value(
            &m,
            "pinsight_domain_memory_remote_ratio",
            &[("domain", &far.name)]
        ),
        Some(1.0)
    );
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";
const NODE0_HUGEPAGES: &str = "/sys/devices/system/node/node0/hugepages/hugepages-2048kB";

fn read_u64(path: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path}: {text:?} is no number"))
}

/// 2 MiB pages reserved in the host's hugetlb pool for one test, and given back after it
/// (also when it fails).
struct Hugepages {
    before: u64,
}

impl Hugepages {
    fn reserve(pages: u64) -> Hugepages {
        let before = read_u64(NR_HUGEPAGES);
        std::fs::write(NR_HUGEPAGES, (before + pages).to_string())
            .unwrap_or_else(|e| panic!("{NR_HUGEPAGES}: {e}"));
        let now = read_u64(NR_HUGEPAGES);
        let reserved = Hugepages { before };
        assert_eq!(
            now,
            before + pages,
            "the kernel reserved {now} 2 MiB pages of the {} asked",
            before + pages
        );
        reserved
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.before.to_string());
    }
}

/// 2 MiB pages of node 0's pool in use.
fn node0_hugepages_used() -> u64 {
    read_u64(&format!("{NODE0_HUGEPAGES}/nr_hugepages"))
        - read_u64(&format!("{NODE0_HUGEPAGES}/free_hugepages"))
}

/// A hugepage-backed VM on this hybrid cgroup host: the hugetlb controller sits on the v2
/// tree, where libvirt does not enable it, so the guest's RAM is in no counter pinsight reads.
/// The daemon says so: the VM's hugetlb bytes on nodes unknown equal its QEMU's
/// `HugetlbPages` and the pages node 0's pool gave it, and the log names the VM. With the
/// numa_maps fallback on, they are placed: all on node 0, remote to the fixture's GPU.
#[test]
fn hugetlb_pages_no_cgroup_counts_are_said_and_placed_by_the_fallback() {
    require_host();
    let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
    assert!(
        mounts
            .lines()
            .any(|l| l.split(' ').nth(2) == Some("hugetlbfs")),
        "hugetlbfs is not mounted: libvirt backs <hugepages/> guests from it (bash \
         scripts/setup.sh mounts it on /dev/hugepages before it starts libvirtd)"
    );
    let _pages = Hugepages::reserve(40);
    let used_before = node0_hugepages_used();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(common::gpu_metadata("0000:3b:00.0")),
        preallocated_mib: Some(64),
        hugepages: true,
        ..VmOptions::idle("memhuge")
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", vm.pid)).expect("status");
    let qemu_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("HugetlbPages:"))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .expect("HugetlbPages in QEMU's status");
    let pool_bytes = (node0_hugepages_used() - used_before) * (2 << 20);
    assert_eq!(
        (qemu_kb * 1024, pool_bytes),
        (64 << 20, 64 << 20),
        "QEMU's hugetlb pages and node 0's pool pages in use are the guest's 64 MiB"
    );

    let unknown = |m: &str| {
        metric_value(
            m,
            "pinsight_domain_memory_hugetlb_node_unknown_bytes",
            &[("domain", &vm.name)],
        )
    };
    let hugetlb_remote = |m: &str| {
        metric_value(
            m,
            "pinsight_domain_memory_hugetlb_bytes",
            &[("domain", &vm.name), ("locality", "remote")],
        )
    };
    let source = |m: &str, source| {
        metric_value(
            m,
            "pinsight_domain_memory_source",
            &[("domain", &vm.name), ("source", source)],
        )
    };
    let config = "tick_seconds = 0.25\nrescan_seconds = 0.5\n";
    {
        // The default: no walk; the pages are said to be there, on nodes unknown.
        let daemon = Daemon::start(&fixture("two-socket-gpu"), config, &[]);
        let m = wait_for(Duration::from_secs(20), "the VM's memory", || {
            let m = daemon.metrics();
            unknown(&m).is_some().then_some(m)
        });
        assert_eq!(unknown(&m), Some((64 << 20) as f64), "{m}");
        assert_eq!(hugetlb_remote(&m), Some(0.0), "{m}");
        assert_eq!(source(&m, "cgroup"), Some(1.0), "{m}");
        daemon.log_line(
            Duration::from_secs(5),
            &[&vm.name, "in no hugetlb cgroup pinsight can read"],
        );
    }
    // The fallback on: their nodes from numa_maps' huge mappings.
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!("{config}numa_maps_fallback_seconds = 1\n"),
        &[],
    );
    let m = wait_for(
        Duration::from_secs(20),
        "the VM's hugetlb pages placed",
        || {
            let m = daemon.metrics();
            (source(&m, "cgroup+numa_maps") == Some(1.0)).then_some(m)
        },
    );
    assert_eq!(hugetlb_remote(&m), Some((64 << 20) as f64), "{m}");
    assert_eq!(unknown(&m), Some(0.0), "{m}");
    let remote = metric_value(
        &m,
        "pinsight_domain_memory_bytes",
        &[("domain", &vm.name), ("locality", "remote")],
    )
    .expect("remote bytes");
    assert!(remote >= (64 << 20) as f64, "{remote} B remote:\n{m}");
}
