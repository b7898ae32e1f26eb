//! Move scopes of every fixture: the smallest level two CPUs share.

use monitor_common::sched_migrate_task::MoveScope::{self, Core, Node, Smt, Socket, Unknown};

use super::read;

fn scopes(fixture: &str, moves: &[(u32, u32)]) -> Vec<MoveScope> {
    let topo = read(fixture);
    moves.iter().map(|&(a, b)| topo.move_scope(a, b)).collect()
}

#[test]
fn the_move_fixtures_put_cpu_0_and_1_one_level_apart_each() {
    for (fixture, scope) in [
        ("moves-smt", Smt),
        ("moves-core", Core),
        ("moves-node", Node),
        ("two-socket-gpu", Socket),
    ] {
        assert_eq!(
            scopes(fixture, &[(0, 1), (1, 0)]),
            [scope, scope],
            "{fixture}"
        );
    }
}

#[test]
fn smt_siblings_across_the_numbering_are_one_core() {
    // Intel numbering: 0&8 are siblings; 0-3,8-11 node 0 / socket 0; 4-7,12-15 socket 1.
    assert_eq!(
        scopes(
            "two-socket-smt",
            &[(0, 8), (8, 0), (0, 1), (9, 2), (0, 4), (12, 3)]
        ),
        [Smt, Smt, Core, Core, Socket, Socket]
    );
}

#[test]
fn sub_numa_clusters_are_node_moves() {
    // snc: nodes 0 (0-1) and 1 (2-3) on socket 0, nodes 2 (4-5) and 3 (6-7) on socket 1.
    assert_eq!(
        scopes("snc", &[(0, 1), (1, 2), (4, 7), (3, 4)]),
        [Core, Node, Node, Socket]
    );
}

#[test]
fn cpus_the_topology_does_not_describe_are_unknown() {
    // offline-cpu: CPU 3 is offline (no topology), CPU 9 does not exist.
    assert_eq!(
        scopes("offline-cpu", &[(0, 3), (3, 0), (9, 1), (0, 1)]),
        [Unknown, Unknown, Unknown, Core]
    );
}

#[test]
fn core_ids_repeat_per_socket_but_probe_ids_do_not() {
    let topo = read("two-socket-gpu");
    // sysfs gives both CPUs core_id 0 (one per socket); the probe must not see one core.
    assert_eq!((topo.cpus[&0].core, topo.cpus[&1].core), (0, 0));
    let ids = topo.cpu_topo();
    assert_ne!(ids[&0].core, ids[&1].core);
    assert_eq!((ids[&1].node, ids[&1].socket), (1, 1));
    let smt = read("two-socket-smt").cpu_topo();
    assert_eq!((smt[&0].core, smt[&8].core, smt[&9].core), (0, 0, 1));
}
