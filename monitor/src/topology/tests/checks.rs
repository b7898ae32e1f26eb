//! Error cases built on the fly, address and label helpers, and the host's own /sys.

use std::fs;
use std::path::Path;

use super::{cpu_files, fixture, read, tree, TempTree};
use crate::cpuset::CpuSet;
use crate::topology::*;

#[test]
fn mdev_parent_refuses_a_parent_that_is_not_pci() {
    let uuid = "6f1e9c2a-1111-4c3b-9d7e-000000000002";
    let t = TempTree::new(
        "mdev",
        &[(&format!("devices/css0/0.0.0001/{uuid}/remove"), "")],
    );
    let link = t.0.join("bus/mdev/devices").join(uuid);
    fs::create_dir_all(link.parent().unwrap()).unwrap();
    std::os::unix::fs::symlink(format!("../../../devices/css0/0.0.0001/{uuid}"), &link).unwrap();
    let err = mdev_parent(&t.0, uuid).unwrap_err();
    assert!(
        err.to_string()
            .contains("whose parent directory is not a PCI device"),
        "{err}"
    );
}

#[test]
fn missing_online_file_is_an_error_naming_it() {
    let root = fixture("does-not-exist");
    let err = Topology::read(&root).unwrap_err();
    let path = root.join("devices/system/cpu/online");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read: ", path.display())),
        "{err}"
    );
}

#[test]
fn node_spanning_sockets_is_an_error_naming_the_node() {
    let mut files = vec![
        ("devices/system/cpu/online".to_string(), "0-1".to_string()),
        ("devices/system/cpu/possible".to_string(), "0-1".to_string()),
        (
            "devices/system/node/node0/cpulist".to_string(),
            "0-1".to_string(),
        ),
    ];
    files.extend(cpu_files(0, "0", "0", "0"));
    files.extend(cpu_files(1, "1", "0", "1"));
    let t = tree("span", files);
    let err = Topology::read(&t.0).unwrap_err();
    let path = t.0.join("devices/system/node/node0/cpulist");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: CPUs 0-1 span sockets 0, 1; a NUMA node lies within one socket",
            path.display()
        )
    );
}

#[test]
fn inconsistent_cpu_files_are_errors_naming_the_file() {
    let base = || {
        let mut files = vec![
            ("devices/system/cpu/online".to_string(), "0-1".to_string()),
            ("devices/system/cpu/possible".to_string(), "0-1".to_string()),
            (
                "devices/system/node/node0/cpulist".to_string(),
                "0-1".to_string(),
            ),
        ];
        files.extend(cpu_files(0, "0", "0", "0"));
        files
    };
    // cpu1 online but without topology/.
    let t = tree("notopo", base());
    let err = Topology::read(&t.0).unwrap_err();
    let path =
        t.0.join("devices/system/cpu/cpu1/topology/physical_package_id");
    assert!(
        err.to_string()
            .starts_with(&format!("{}: cannot read", path.display())),
        "{err}"
    );

    // A CPU that is not its own sibling.
    let mut files = base();
    files.extend(cpu_files(1, "0", "1", "0"));
    let t = tree("sib", files);
    let err = Topology::read(&t.0).unwrap_err().to_string();
    assert!(
        err.contains("cpu1/topology/thread_siblings_list: CPU 1 is not among"),
        "{err}"
    );

    // A CPU in two nodes.
    let mut files = base();
    files.extend(cpu_files(1, "0", "1", "1"));
    files.push((
        "devices/system/node/node1/cpulist".to_string(),
        "1".to_string(),
    ));
    let t = tree("twice", files);
    let err = Topology::read(&t.0).unwrap_err().to_string();
    assert!(
        err.contains("node1/cpulist: CPU 1 is also in node 0"),
        "{err}"
    );

    // Online but not possible.
    let mut files = base();
    files.extend(cpu_files(1, "0", "1", "1"));
    files[1].1 = "0".to_string();
    let t = tree("possible", files);
    let err = Topology::read(&t.0).unwrap_err().to_string();
    assert!(err.contains("cpu/online: online CPUs 0-1 are not all among the possible CPUs 0"));
}

#[test]
fn normalizes_pci_addresses() {
    let cases = [
        ("0000:3B:00.0", Some("0000:3b:00.0")),
        ("3b:00.0", Some("0000:3b:00.0")),
        (" 0000:af:1f.7\n", Some("0000:af:1f.7")),
        ("0:3b:0.0", Some("0000:3b:00.0")),
        ("10000:01:00.0", Some("10000:01:00.0")),
        ("0000:3b:20.0", None),
        ("0000:3b:00.8", None),
        ("0000:3bb:00.0", None),
        ("0000:3b:00", None),
        ("3b.00.0", None),
        ("0000:00:3b:00.0", None),
        ("6f1e9c2a-1111-4c3b-9d7e-000000000001", None),
        ("", None),
    ];
    for (input, expected) in cases {
        assert_eq!(
            normalize_pci_address(input).as_deref(),
            expected,
            "input {input:?}"
        );
    }
}

#[test]
fn gpu_classes_and_locality_labels() {
    assert!(Topology::is_gpu_class(0x030200));
    assert!(Topology::is_gpu_class(0x030000));
    assert!(Topology::is_gpu_class(0x120000));
    assert!(!Topology::is_gpu_class(0x020000));
    assert!(!Topology::is_gpu_class(0x060400));
    let labels: Vec<&str> = Locality::ALL.iter().map(|l| l.as_str()).collect();
    assert_eq!(labels, vec!["local", "same_socket", "remote", "none"]);
    for locality in Locality::ALL {
        let json = serde_json::to_string(&locality).unwrap();
        assert_eq!(json, format!("\"{}\"", locality.as_str()));
    }
}

#[test]
fn serializes_cpu_sets_as_lists() {
    let json = serde_json::to_value(read("two-socket-smt")).unwrap();
    assert_eq!(json["nodes"]["0"]["cpus"], "0-3,8-11");
    assert_eq!(json["cpus"]["9"]["siblings"], "1,9");
    assert_eq!(json["pci"]["0000:3b:00.0"]["node"], 1);
    assert_eq!(json["offline_cpus"], "");
}

/// The host's own /sys must read and agree with itself (values differ per machine, so the test
/// checks relations and cross-checks /proc/cpuinfo rather than fixed numbers).
#[test]
fn real_sysfs_is_self_consistent() {
    let topo = Topology::read(Path::new("/sys")).unwrap_or_else(|e| panic!("/sys: {e}"));
    let online: CpuSet = topo.cpus.keys().copied().collect();
    assert!(!online.is_empty());
    assert!(online.is_subset(&topo.possible_cpus));
    assert_eq!(topo.offline_cpus, topo.possible_cpus.difference(&online));
    let sockets = topo.sockets();
    for cpu in topo.cpus.values() {
        let node = &topo.nodes[&cpu.node];
        assert!(
            node.cpus.contains(cpu.id),
            "cpu{} not in node{}",
            cpu.id,
            node.id
        );
        assert_eq!(node.socket, Some(cpu.socket), "node{}", node.id);
        assert!(sockets[&cpu.socket].contains(cpu.id));
        assert!(cpu.siblings.contains(cpu.id));
        assert_eq!(topo.locality(cpu.id, &[cpu.node]), Locality::Local);
    }
    assert_eq!(
        topo.node_cpus(&topo.nodes.keys().copied().collect::<Vec<_>>()),
        online
    );

    // /proc/cpuinfo lists the online CPUs, and on x86 their package as "physical id".
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap();
    let mut processor = None;
    let mut seen = CpuSet::new();
    for line in cpuinfo.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "processor" => {
                let id: u32 = value.trim().parse().unwrap();
                seen.insert(id);
                processor = Some(id);
            }
            "physical id" => {
                let id = processor.unwrap();
                assert_eq!(topo.cpus[&id].socket, value.trim().parse::<u32>().unwrap());
            }
            _ => {}
        }
    }
    assert_eq!(seen, online);
    for dev in topo.pci.values() {
        if let Some(node) = dev.node {
            assert!(
                topo.nodes.contains_key(&node),
                "{} on unknown node {node}",
                dev.address
            );
        }
    }
}
