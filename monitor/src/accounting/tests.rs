//! Accounting of a VM's threads by owner: vCPUs and the other roles of its QEMU process.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::*;
use crate::inventory::ThreadRole;
use crate::test_support::{topo, VmBuilder};

/// Counters of a thread that ran `ns[cpu]` on each CPU.
fn ran(ns: &[u64]) -> ThreadCounters {
    ThreadCounters {
        run_ns_by_cpu: ns.to_vec(),
        ..Default::default()
    }
}

#[test]
fn other_threads_count_by_role_and_locality_apart_from_the_vcpus() {
    // Fixture: CPU 0 on socket 0, CPU 1 on socket 1 with the GPU's node 1.
    let topology = topo("two-socket-gpu");
    let vm = VmBuilder::new("vm")
        .vcpus(&["0-1"])
        .gpu_nodes(&[1])
        .threads(&[
            (1, ThreadRole::Emulator),
            (200, ThreadRole::Iothread),
            (201, ThreadRole::Other),
        ])
        .build();
    let vms = [vm];
    let mut accounting = Accounting::new(Duration::from_secs(60), None);
    let t0 = Instant::now();
    let counters = |vcpu: &[u64], emulator: &[u64], io: &[u64], other: &[u64]| {
        BTreeMap::from([
            (100, ran(vcpu)),
            (1, ran(emulator)),
            (200, ran(io)),
            (201, ran(other)),
        ])
    };
    accounting.update(
        t0,
        &vms,
        &counters(&[0, 0], &[0, 0], &[0, 0], &[0, 0]),
        &topology,
    );
    accounting.update(
        t0 + Duration::from_secs(1),
        &vms,
        &counters(
            &[0, 4_000_000_000],
            &[3_000_000_000, 1_000_000_000],
            &[0, 2_000_000_000],
            &[500_000_000, 0],
        ),
        &topology,
    );
    let totals = &accounting.domains()["vm"];
    let by_role = totals.run_seconds_by_role();
    assert_eq!(by_role.len(), ThreadRole::ALL.len(), "every role present");
    assert_eq!(by_role[&ThreadRole::Vcpu].local, 4.0);
    assert_eq!(by_role[&ThreadRole::Vcpu].remote, 0.0);
    assert_eq!(by_role[&ThreadRole::Emulator].remote, 3.0);
    assert_eq!(by_role[&ThreadRole::Emulator].local, 1.0);
    assert_eq!(by_role[&ThreadRole::Iothread].local, 2.0);
    assert_eq!(by_role[&ThreadRole::Other].remote, 0.5);
    // The vCPU figures hold only the vCPU's time.
    assert_eq!(totals.run_seconds().total(), 4.0);
    assert_eq!(totals.remote_ratio, Some(0.0));
    // Emulator and IOThreads: 3 s of 6 remote; "other" threads are not in it.
    assert_eq!(totals.emulator_remote_ratio, Some(0.5));
}

#[test]
fn a_departed_role_thread_is_folded_into_its_role_and_a_vm_without_gpus_has_no_ratio() {
    let topology = topo("two-socket-gpu");
    let vm = VmBuilder::new("vm")
        .vcpus(&["0"])
        .threads(&[(300, ThreadRole::Other)])
        .build();
    let vms = [vm];
    let mut accounting = Accounting::new(Duration::from_secs(60), None);
    let now = Instant::now();
    let first = BTreeMap::from([(300, ran(&[1_000_000_000, 0]))]);
    accounting.update(now, &vms, &first, &topology);
    // The worker exits: its final counters arrive through retire, not a reading.
    accounting.retire(300, &ran(&[3_000_000_000, 0]), &vms, &topology);
    let totals = &accounting.domains()["vm"];
    assert_eq!(totals.roles[&ThreadRole::Other].none, 3.0);
    assert_eq!(totals.emulator_remote_ratio, None);
    assert_eq!(totals.remote_ratio, None);
}
