//! Where misplaced vCPUs go: the GPU's node, whole SMT cores, SNC fallback, capacity.

use super::*;

#[test]
fn two_sockets_far_pin_goes_to_the_gpu_node_with_the_emulator() {
    let t = topo("two-socket-gpu");
    let vms = [
        vm("far", &[1], &["0"]),
        vm("near", &[1], &["1"]),
        vm("nogpu", &[], &["0"]),
    ];
    // "near" holds CPU 1; a second vCPU there needs oversubscription 2.
    let plan = eval(
        PolicyConfig {
            max_oversubscription: 2.0,
            ..config()
        },
        &t,
        &vms,
    );
    assert_eq!(plan.decisions.len(), 2, "VMs without GPUs get no decision");
    let far = decision(&plan, "far");
    assert_eq!(far.verdict, Verdict::Repin, "{}", far.reason);
    assert_eq!(after(far), ["1"]);
    assert_eq!(far.vcpus[0].before, cpus("0"));
    assert_eq!(
        far.vcpus[0].trigger,
        Trigger::AllowedFarSocket {
            far_cpus: cpus("0")
        }
    );
    assert_eq!(
        far.emulator,
        Some(EmulatorMove {
            before: cpus("0-1"),
            after: cpus("1")
        })
    );
    assert!(
        far.reason.contains("may run on far-socket CPUs 0"),
        "{}",
        far.reason
    );
    assert_eq!(decision(&plan, "near").verdict, Verdict::Placed);
    assert!(decision(&plan, "far").recommends_moving(0));
    assert!(!decision(&plan, "near").recommends_moving(0));
    assert!(!plan.decisions.iter().any(|d| d.domain == "nogpu"));
}

#[test]
fn a_full_gpu_node_gives_no_capacity_until_oversubscription_allows_it() {
    let t = topo("two-socket-gpu");
    let vms = [vm("far", &[1], &["0"]), vm("holder", &[], &["1"])];
    let plan = eval(config(), &t, &vms);
    let far = decision(&plan, "far");
    assert_eq!(far.verdict, Verdict::NoCapacity);
    assert_eq!(after(far), ["-"]);
    assert!(
        far.reason
            .contains("GPU node CPUs 1 hold 1.00 pinned vCPUs of 1.00"),
        "{}",
        far.reason
    );
    assert!(!far.recommends_moving(0));
    let plan = eval(
        PolicyConfig {
            max_oversubscription: 2.0,
            ..config()
        },
        &t,
        &vms,
    );
    assert_eq!(decision(&plan, "far").verdict, Verdict::Repin);
}

#[test]
fn vms_placed_in_one_evaluation_use_up_the_room_in_turn() {
    let t = topo("two-socket-gpu");
    let vms = [vm("a", &[1], &["0"]), vm("b", &[1], &["0"])];
    let plan = eval(config(), &t, &vms);
    assert_eq!(decision(&plan, "a").verdict, Verdict::Repin);
    assert_eq!(decision(&plan, "b").verdict, Verdict::NoCapacity);
    let plan = eval(
        PolicyConfig {
            max_oversubscription: 3.0,
            ..config()
        },
        &t,
        &vms,
    );
    assert_eq!(decision(&plan, "b").verdict, Verdict::Repin);
}

#[test]
fn reserved_cpus_are_never_targets() {
    let t = topo("two-socket-gpu");
    let vms = [vm("far", &[1], &["0"])];
    let plan = eval(
        PolicyConfig {
            reserved_cpus: cpus("1"),
            ..config()
        },
        &t,
        &vms,
    );
    let far = decision(&plan, "far");
    assert_eq!(far.verdict, Verdict::NoCapacity);
    assert!(
        far.reason.contains("GPU node CPUs 1 (1 reserved)"),
        "{}",
        far.reason
    );

    let t = topo("two-socket-smt");
    let vms = [vm("far", &[1], &["0"])];
    let config = PolicyConfig {
        reserved_cpus: cpus("4,12"),
        ..config()
    };
    assert_eq!(after(decision(&eval(config, &t, &vms), "far")), ["5,13"]);
}

#[test]
fn smt_whole_cores_first_and_cores_other_vms_use_last() {
    let t = topo("two-socket-smt");
    // Node 1 = 4-7,12-15; siblings 4&12, 5&13, ...
    let one = [vm("one", &[1], &["0-15"])];
    assert_eq!(after(decision(&eval(config(), &t, &one), "one")), ["4,12"]);
    let three = [vm("three", &[1], &["0", "1", "2"])];
    assert_eq!(
        after(decision(&eval(config(), &t, &three), "three")),
        ["4-5,12-13"; 3]
    );
    // Another VM's vCPU on CPU 4 makes core 4/12 a shared one: the VM gets core 5/13.
    let shared = [vm("new", &[1], &["0"]), vm("other", &[], &["4"])];
    assert_eq!(
        after(decision(&eval(config(), &t, &shared), "new")),
        ["5,13"]
    );
    // Without SMT grouping: single CPUs, least loaded, lowest first.
    let config = PolicyConfig {
        keep_smt_cores: false,
        ..config()
    };
    assert_eq!(
        after(decision(&eval(config.clone(), &t, &one), "one")),
        ["4"]
    );
    assert_eq!(after(decision(&eval(config, &t, &shared), "new")), ["5"]);
}

#[test]
fn smt_node_filled_by_others_gives_no_capacity() {
    let t = topo("two-socket-smt");
    let mut vms = vec![vm("new", &[1], &["0"])];
    vms.push(vm("big", &[], &["4-7,12-15"; 8]));
    let plan = eval(config(), &t, &vms);
    let d = decision(&plan, "new");
    assert_eq!(d.verdict, Verdict::NoCapacity);
    assert!(
        d.reason.contains("hold 8.00 pinned vCPUs of 8.00"),
        "{}",
        d.reason
    );
}

#[test]
fn snc_targets_the_gpu_node_then_falls_back_to_its_socket() {
    let t = topo("snc");
    // GPU on node 1 (CPUs 2-3, socket 0); node 0 (0-1) is the same socket; 4-7 the far one.
    let far = [vm("far", &[1], &["4"])];
    let d = eval(config(), &t, &far).decisions.remove(0);
    assert_eq!(
        (d.verdict, after(&d)),
        (Verdict::Repin, vec!["2".to_string()])
    );
    // Allowed on the GPU's socket only: same_socket time is not remote, nothing to do.
    let near = [vm("near", &[1], &["0-1"])];
    assert_eq!(
        eval(config(), &t, &near).decisions[0].verdict,
        Verdict::Placed
    );
    // Node 1 full: the rest of socket 0 rather than nothing.
    let full = [vm("far", &[1], &["4"]), vm("holder", &[], &["2", "3"])];
    let d = eval(config(), &t, &full).decisions.remove(0);
    assert_eq!(
        (d.verdict, after(&d)),
        (Verdict::Repin, vec!["0".to_string()])
    );
    assert!(
        d.reason
            .contains("on the GPU's socket (the GPU's node has no room)"),
        "{}",
        d.reason
    );
}
