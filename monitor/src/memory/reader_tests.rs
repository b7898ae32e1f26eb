//! The memory reader: hugetlb pages added by node, numa_maps only as the rate-limited fallback.

use super::cgroup::{page_size, MAX_STAT_FILE_BYTES};
use super::*;

/// A /proc and cgroup tree for pid 42, in its memory cgroup.
fn tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let (proc_root, cg) = (dir.path().join("proc"), dir.path().join("cgroup"));
    std::fs::create_dir_all(proc_root.join("42")).unwrap();
    std::fs::write(proc_root.join("42/cgroup"), "4:memory:/vm\n").unwrap();
    std::fs::write(
        proc_root.join("42/numa_maps"),
        "7f00 default anon=2 N0=1 N1=1 kernelpagesize_kB=4\n",
    )
    .unwrap();
    std::fs::write(
        proc_root.join("42/status"),
        "Name:\tqemu\nHugetlbPages:\t       0 kB\n",
    )
    .unwrap();
    std::fs::create_dir_all(cg.join("memory/vm")).unwrap();
    std::fs::write(cg.join("memory/vm/memory.numa_stat"), "total=1 N0=1\n").unwrap();
    std::fs::create_dir_all(cg.join("hugetlb/vm")).unwrap();
    std::fs::write(
        cg.join("hugetlb/vm/hugetlb.2MB.numa_stat"),
        "total=2097152 N1=2097152\n",
    )
    .unwrap();
    dir
}

#[test]
fn hugetlb_pages_are_added_to_the_nodes_they_sit_on() {
    let dir = tempfile::tempdir().unwrap();
    let (proc_root, cg) = (dir.path().join("proc"), dir.path().join("cgroup"));
    std::fs::create_dir_all(proc_root.join("42")).unwrap();
    std::fs::write(proc_root.join("42/cgroup"), "5:hugetlb:/vm\n4:memory:/vm\n").unwrap();
    std::fs::create_dir_all(cg.join("memory/vm")).unwrap();
    std::fs::write(cg.join("memory/vm/memory.numa_stat"), "total=1 N0=1 N1=0\n").unwrap();
    std::fs::create_dir_all(cg.join("hugetlb/vm")).unwrap();
    std::fs::write(
        cg.join("hugetlb/vm/hugetlb.2MB.numa_stat"),
        "total=2097152 N1=2097152\n",
    )
    .unwrap();
    let r = read(&proc_root, &cg, 42).unwrap();
    assert_eq!(r.by_node, BTreeMap::from([(0, page_size()), (1, 2097152)]));
    assert_eq!(r.hugetlb_by_node, BTreeMap::from([(1, 2097152)]));
    assert_eq!(r.source, MemorySource::Cgroup);
}

#[test]
fn hugetlb_pages_no_cgroup_counts_are_on_nodes_unknown_or_walked() {
    // No hugetlb controller for the VM (a hybrid host where libvirt leaves it off the v2
    // tree): 4 MiB of hugetlb pages, known from /proc/PID/status, on node 1 by numa_maps.
    let dir = tree();
    let (p, c) = (dir.path().join("proc"), dir.path().join("cgroup"));
    std::fs::write(
        p.join("42/status"),
        "Name:\tqemu\nHugetlbPages:\t    4096 kB\n",
    )
    .unwrap();
    std::fs::write(
        p.join("42/numa_maps"),
        "7f00 default anon=2 N0=2 kernelpagesize_kB=4\n\
         7f40 default file=/dev/hugepages/vm huge dirty=2 N1=2 kernelpagesize_kB=2048\n",
    )
    .unwrap();
    let t0 = Instant::now();
    // Fallback off: the cgroup's figure, and the hugetlb pages on nodes unknown.
    let r = MemoryReader::new(None).read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.by_node, BTreeMap::from([(0, page_size())]));
    assert_eq!(
        (r.hugetlb_node_unknown, r.source),
        (4 << 20, MemorySource::Cgroup)
    );
    // Fallback on: their nodes from numa_maps' huge mappings alone, added to the cgroup's.
    let every = Duration::from_secs(60);
    let mut reader = MemoryReader::new(Some(every));
    let r = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.by_node, BTreeMap::from([(0, page_size()), (1, 4 << 20)]));
    assert_eq!(r.hugetlb_by_node, BTreeMap::from([(1, 4 << 20)]));
    assert_eq!(r.hugetlb_node_unknown, 0);
    assert_eq!(r.source, MemorySource::CgroupAndNumaMaps);
    // Walked at most once per interval; a failed walk leaves them unknown, not stale.
    std::fs::write(p.join("42/numa_maps"), "7f40 default huge N1=x\n").unwrap();
    assert_eq!(reader.read(&p, &c, 42, t0 + every / 2).unwrap(), r);
    let r = reader.read(&p, &c, 42, t0 + every).unwrap();
    assert_eq!(
        (r.hugetlb_node_unknown, r.source),
        (4 << 20, MemorySource::Cgroup)
    );
    // A status line not in the kernel's format is named.
    std::fs::write(p.join("42/status"), "HugetlbPages:\tlots\n").unwrap();
    let err = MemoryReader::new(None)
        .read(&p, &c, 42, t0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("42/status") && err.contains("lots"), "{err}");
}

#[test]
fn numa_maps_only_without_a_memory_cgroup_and_at_most_once_per_interval() {
    let every = Duration::from_secs(60);
    let with = tree();
    let (p, c) = (with.path().join("proc"), with.path().join("cgroup"));
    let mut reader = MemoryReader::new(Some(every));
    let t0 = Instant::now();
    let r = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.source, MemorySource::Cgroup, "cgroup first, no walk");

    // The VM loses its memory cgroup (the files found for it go, and /proc no longer names
    // one): from here numa_maps is the source.
    std::fs::write(p.join("42/cgroup"), "1:cpu:/vm\n").unwrap();
    std::fs::remove_dir_all(c.join("memory/vm")).unwrap();
    let r = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.source, MemorySource::NumaMaps);
    assert_eq!(r.by_node, BTreeMap::from([(0, 4096), (1, 4096)]));
    // Within the interval the last walk is reused: numa_maps is not read again.
    std::fs::write(p.join("42/numa_maps"), "7f00 default N0=x\n").unwrap();
    let again = reader.read(&p, &c, 42, t0 + every / 2).unwrap();
    assert_eq!(again, r);
    // After it, numa_maps is read again (and its error named).
    let err = reader.read(&p, &c, 42, t0 + every).unwrap_err().to_string();
    assert!(err.contains("numa_maps") && err.contains("N0=x"), "{err}");
    // Off: no walk at all, the cgroup error stands.
    let mut off = MemoryReader::new(None);
    let err = off.read(&p, &c, 42, t0).unwrap_err();
    assert!(matches!(err, MemoryError::NoCgroup { .. }), "{err}");
    // A process that vanished mid-read is an error, not a stale figure.
    std::fs::remove_dir_all(p.join("42")).unwrap();
    reader.retain(|_| false);
    assert!(reader.read(&p, &c, 42, t0 + every * 2).is_err());
}

#[test]
fn the_files_found_once_are_read_each_time_and_found_anew_when_they_go() {
    let dir = tree();
    let (p, c) = (dir.path().join("proc"), dir.path().join("cgroup"));
    let mut reader = MemoryReader::new(None);
    let t0 = Instant::now();
    let first = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(first.by_node[&0], page_size());
    // /proc/PID/cgroup is not read again while the files it led to are there...
    std::fs::write(p.join("42/cgroup"), "4:memory:/elsewhere\n").unwrap();
    std::fs::write(c.join("memory/vm/memory.numa_stat"), "total=3 N0=3\n").unwrap();
    let r = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.by_node[&0], 3 * page_size());
    // ...and is when they are gone (the process moved, or is another one of that pid).
    std::fs::remove_dir_all(c.join("memory/vm")).unwrap();
    std::fs::create_dir_all(c.join("memory/elsewhere")).unwrap();
    std::fs::write(
        c.join("memory/elsewhere/memory.numa_stat"),
        "total=5 N1=5\n",
    )
    .unwrap();
    let r = reader.read(&p, &c, 42, t0).unwrap();
    assert_eq!(r.by_node, BTreeMap::from([(1, 5 * page_size())]));
}

#[test]
fn a_stat_file_without_end_is_an_error_naming_it() {
    let dir = tree();
    let (p, c) = (dir.path().join("proc"), dir.path().join("cgroup"));
    let stat = c.join("memory/vm/memory.numa_stat");
    std::fs::write(&stat, "x".repeat(2 * MAX_STAT_FILE_BYTES)).unwrap();
    let err = MemoryReader::new(None)
        .read(&p, &c, 42, Instant::now())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("memory.numa_stat") && err.contains("longer than 1048576 bytes"),
        "{err}"
    );
}
