//! Each fixture read whole: sockets, nodes, siblings, PCI nodes, locality.

use std::fs;

use super::{fixture, read, set};
use crate::topology::*;

#[test]
fn two_socket_gpu_places_cpus_gpus_and_nic() {
    let topo = read("two-socket-gpu");
    assert_eq!(topo.possible_cpus, set("0-1"));
    assert!(topo.offline_cpus.is_empty());
    assert_eq!(topo.cpus.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    assert_eq!((topo.cpus[&0].socket, topo.cpus[&0].node), (0, 0));
    assert_eq!((topo.cpus[&1].socket, topo.cpus[&1].node), (1, 1));
    let sockets = topo.sockets();
    assert_eq!(sockets.len(), 2);
    assert_eq!((&sockets[&0], &sockets[&1]), (&set("0"), &set("1")));
    assert_eq!(
        (topo.socket_of_node(0), topo.socket_of_node(1)),
        (Some(0), Some(1))
    );

    // 0000:3b:00.0 and its bridge are symlinks into devices/, like real sysfs.
    let link = fixture("two-socket-gpu/bus/pci/devices/0000:3b:00.0");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(topo.pci_node("0000:3b:00.0"), Some(1));
    assert_eq!(topo.pci_node("3B:00.0"), Some(1));
    assert_eq!(topo.pci_node("0000:af:00.0"), Some(0));
    assert_eq!(topo.pci_node("0000:18:00.0"), Some(0));
    assert_eq!(topo.pci_node("0000:99:00.0"), None);
    let gpu = &topo.pci["0000:3b:00.0"];
    assert_eq!(
        (gpu.class, gpu.vendor, gpu.device),
        (Some(0x030200), Some(0x10de), Some(0x20b5))
    );
    let gpus: Vec<&str> = topo.gpus().map(|d| d.address.as_str()).collect();
    assert_eq!(gpus, vec!["0000:3b:00.0", "0000:af:00.0"]);
    assert!(!topo.pci["0000:18:00.0"].is_gpu());
    assert!(topo.warnings.is_empty(), "{:?}", topo.warnings);

    let gpu_nodes = [topo.pci_node("0000:3b:00.0").unwrap()];
    assert_eq!(topo.locality(1, &gpu_nodes), Locality::Local);
    assert_eq!(topo.locality(0, &gpu_nodes), Locality::Remote);
    assert_eq!(topo.locality(0, &[]), Locality::None);
    assert_eq!(topo.locality(0, &[0, 1]), Locality::Local);
}

#[test]
fn mdev_parent_follows_the_relative_symlink() {
    let root = fixture("two-socket-gpu");
    let uuid = "6f1e9c2a-1111-4c3b-9d7e-000000000001";
    assert_eq!(mdev_parent(&root, uuid).unwrap(), "0000:3b:00.0");
    assert_eq!(
        mdev_parent(&root, &uuid.to_uppercase()).unwrap(),
        "0000:3b:00.0"
    );

    let missing = "6f1e9c2a-1111-4c3b-9d7e-0000000000ff";
    let err = mdev_parent(&root, missing).unwrap_err();
    assert!(matches!(err, TopologyError::Read { .. }), "{err:?}");
    let expected = root.join("bus/mdev/devices").join(missing);
    assert!(
        err.to_string()
            .starts_with(&format!("{}: ", expected.display())),
        "{err}"
    );

    let err = mdev_parent(&root, "../../devices").unwrap_err();
    assert!(
        err.to_string()
            .contains("\"../../devices\" is not an mdev UUID"),
        "{err}"
    );
}

#[test]
fn two_socket_smt_pairs_siblings_across_the_numbering() {
    let topo = read("two-socket-smt");
    assert_eq!(topo.cpus.len(), 16);
    assert_eq!(topo.cpus[&0].siblings, set("0,8"));
    assert_eq!(topo.cpus[&13].siblings, set("5,13"));
    assert_eq!((topo.cpus[&13].socket, topo.cpus[&13].core), (1, 1));
    assert_eq!(topo.cpus[&5].core, topo.cpus[&13].core);
    let sockets = topo.sockets();
    assert_eq!(sockets[&0], set("0-3,8-11"));
    assert_eq!(sockets[&1], set("4-7,12-15"));
    assert_eq!(topo.nodes[&1].cpus, set("4-7,12-15"));
    assert_eq!(topo.node_cpus(&[0, 1]), set("0-15"));
    assert_eq!(topo.node_cpus(&[1, 42]), set("4-7,12-15"));

    let gpu_node = topo.pci_node("0000:3b:00.0").unwrap();
    assert_eq!(gpu_node, 1);
    assert_eq!(topo.locality(12, &[gpu_node]), Locality::Local);
    assert_eq!(topo.locality(8, &[gpu_node]), Locality::Remote);
}

#[test]
fn snc_splits_sockets_into_nodes_and_keeps_memory_only_nodes() {
    let topo = read("snc");
    assert_eq!(topo.nodes.len(), 5);
    let sockets: Vec<Option<u32>> = (0..5).map(|n| topo.socket_of_node(n)).collect();
    assert_eq!(sockets, vec![Some(0), Some(0), Some(1), Some(1), None]);
    assert!(topo.nodes[&4].cpus.is_empty());
    assert_eq!(topo.sockets()[&0], topo.node_cpus(&[0, 1]));

    let gpu = [topo.pci_node("0000:3b:00.0").unwrap()];
    assert_eq!(gpu, [1]);
    assert_eq!(topo.locality(2, &gpu), Locality::Local);
    assert_eq!(topo.locality(0, &gpu), Locality::SameSocket);
    assert_eq!(topo.locality(5, &gpu), Locality::Remote);
    // Two GPUs on different sockets: every CPU is at least on a GPU's socket.
    assert_eq!(topo.locality(6, &[1, 2]), Locality::SameSocket);
    assert_eq!(topo.locality(4, &[1, 2]), Locality::Local);
    // Unknown CPU, unknown GPU node: the topology cannot tell.
    assert_eq!(topo.locality(99, &gpu), Locality::None);
    assert_eq!(topo.locality(0, &[9]), Locality::None);
    // A memory-only node has no socket: nothing is same-socket to it.
    assert_eq!(topo.locality(0, &[4]), Locality::Remote);
}

#[test]
fn numa_minus_one_falls_back_to_local_cpulist_and_warns() {
    let topo = read("numa-minus-one");
    let root = fixture("numa-minus-one");
    let dev = |a: &str| root.join("bus/pci/devices").join(a);
    // -1 with local_cpulist on socket 1's CPUs.
    assert_eq!(topo.pci_node("0000:3b:00.0"), Some(1));
    // No numa_node file; local_cpulist 1-3 is mostly node 1.
    assert_eq!(topo.pci_node("0000:d8:00.0"), Some(1));
    assert!(
        topo.pci["0000:d8:00.0"].is_gpu(),
        "0x12 accelerators count as GPUs"
    );
    // -1 and no local_cpulist.
    assert_eq!(topo.pci_node("0000:af:00.0"), None);
    // -1 and local_cpulist spread evenly over both nodes.
    assert_eq!(topo.pci_node("0000:5e:00.0"), None);
    // A node that does not exist; local_cpulist says node 0. Its class is garbage.
    assert_eq!(topo.pci_node("0000:86:00.0"), Some(0));
    assert_eq!(topo.pci["0000:86:00.0"].class, None);
    assert!(!topo.pci.keys().any(|a| a.contains("not")));

    let expected = [
        format!(
            "{}: numa_node is -1 and there is no local_cpulist; NUMA node unknown",
            dev("0000:af:00.0").display()
        ),
        format!(
            "{}: CPUs 0-3 are spread evenly over nodes 0, 1; NUMA node unknown",
            dev("0000:5e:00.0/local_cpulist").display()
        ),
        format!(
            "{}: node 7 is not a NUMA node of this host; trying local_cpulist",
            dev("0000:86:00.0/numa_node").display()
        ),
        format!(
            "{}: \"zz\" is not a hex number",
            dev("0000:86:00.0/class").display()
        ),
        format!(
            "{}: not a PCI address; skipped",
            dev("not-a-pci-device").display()
        ),
    ];
    for warning in &expected {
        assert!(
            topo.warnings.contains(warning),
            "missing {warning:?} in {:#?}",
            topo.warnings
        );
    }
    assert_eq!(topo.warnings.len(), expected.len(), "{:#?}", topo.warnings);
}

#[test]
fn offline_cpu_is_reported_and_skipped() {
    let topo = read("offline-cpu");
    assert_eq!(topo.cpus.keys().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
    assert_eq!(topo.offline_cpus, set("3"));
    assert_eq!(topo.possible_cpus, set("0-3"));
    assert_eq!(topo.nodes[&0].cpus, set("0-2"));
    assert_eq!(topo.locality(3, &[0]), Locality::None);
    assert!(topo.warnings.is_empty(), "{:?}", topo.warnings);
}

#[test]
fn malformed_package_id_names_the_file() {
    let root = fixture("malformed");
    let err = Topology::read(&root).unwrap_err();
    let path = root.join("devices/system/cpu/cpu1/topology/physical_package_id");
    assert!(
        matches!(&err, TopologyError::Parse { path: p, .. } if *p == path),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("{}: \"abc\" is not a number", path.display())
    );
}

#[test]
fn no_numa_makes_one_node_of_all_cpus() {
    let topo = read("no-numa");
    assert_eq!(topo.nodes.len(), 1);
    assert_eq!(topo.nodes[&0].cpus, set("0-1"));
    assert_eq!(topo.nodes[&0].socket, Some(0));
    assert!(topo.cpus.values().all(|c| c.node == 0));
    assert_eq!(topo.pci_node("00:02.0"), Some(0));
    assert_eq!(topo.locality(1, &[0]), Locality::Local);
}

/// The per-VM table answers exactly what `locality` answers, for every CPU of every fixture,
/// GPU set and CPU beyond them, and a CPU id no vector should be sized by.
#[test]
fn the_locality_table_answers_what_locality_answers() {
    for name in ["two-socket-gpu", "two-socket-smt", "moves-node"] {
        let mut topo = read(name);
        let far = *topo.cpus.keys().next_back().unwrap();
        let odd = topo.cpus[&far].clone();
        topo.cpus.insert(4_000_000, odd);
        for gpu_nodes in [vec![], vec![0], vec![1], vec![0, 1], vec![7]] {
            let table = topo.localities(&gpu_nodes);
            for cpu in topo.cpus.keys().copied().chain([far + 1, 9000, u32::MAX]) {
                assert_eq!(
                    table.of(cpu),
                    topo.locality(cpu, &gpu_nodes),
                    "{name}: CPU {cpu}, GPU nodes {gpu_nodes:?}"
                );
            }
        }
    }
}
