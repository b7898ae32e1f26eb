//! The view joins the sources right, carries the policy's verdicts and reads back whole.

use super::*;
use crate::accounting::{ByLocality, VcpuTotals};
use crate::policy::{Trigger, VcpuMove, Verdict, VmDecision};
use crate::test_support::{cpus, topo, view_inputs, VmBuilder};
use crate::topology::Locality;

fn view() -> HostView {
    let inventory = Inventory {
        vms: vec![
            VmBuilder::new("far")
                .vcpus(&["0", "1"])
                .gpu("0000:3b:00.0", 1)
                .build(),
            VmBuilder::new("plain").vcpus(&["0-1"]).build(),
        ],
        problems: vec!["domain gone: cannot read XML".into()],
    };
    let vcpu = VcpuTotals {
        run_seconds: ByLocality {
            remote: 2.0,
            ..Default::default()
        },
        exits: BTreeMap::from([((Locality::Remote, "io"), 5)]),
        remote_ratio: Some(1.0),
        ..Default::default()
    };
    let totals = DomainTotals {
        vcpus: BTreeMap::from([(0, vcpu)]),
        remote_ratio: Some(1.0),
        ..Default::default()
    };
    let (topology, totals) = (
        topo("two-socket-gpu"),
        BTreeMap::from([("far".into(), totals)]),
    );
    HostView::build(ViewInputs {
        mode: Mode::Recommend,
        tick: 7,
        extra_problems: vec!["probes not loaded: test".into()],
        ..view_inputs(&topology, &inventory, &totals)
    })
}

#[test]
fn the_view_joins_inventory_and_accounting_and_flags_far_socket_cpus() {
    let v = view();
    assert_eq!(v.tick, 7);
    assert_eq!(v.problems.len(), 2);
    let far = v.vm("far").unwrap();
    assert_eq!(far.remote_ratio, Some(1.0));
    assert_eq!(far.kvm_exits.remote, 5);
    // vCPU 0 may run on CPU 0 (socket 0: far from the GPU on node 1), vCPU 1 may not.
    assert!(far.vcpus[0].allowed_on_far_socket);
    assert!(!far.vcpus[1].allowed_on_far_socket);
    assert_eq!(far.vcpus[1].run_seconds, ByLocality::default());
    assert_eq!(far.vcpus[0].tid, Some(100));
    let plain = v.vm("plain").unwrap();
    assert!(!plain.has_gpu() && plain.remote_ratio.is_none());
    assert!(!plain.vcpus[0].allowed_on_far_socket);
    assert_eq!(
        v.vcpu_remote_ratios(),
        BTreeMap::from([(("far".to_string(), 0), 1.0)])
    );
}

#[test]
fn policy_verdicts_and_counts_land_on_their_vm() {
    let mut v = view();
    let decision = VmDecision {
        domain: "far".into(),
        gpu_nodes: vec![1],
        verdict: Verdict::SkippedCooldown,
        reason: "acted 10s ago".into(),
        vcpus: vec![VcpuMove {
            vcpu: 0,
            before: cpus("0"),
            after: Some(cpus("1")),
            trigger: Trigger::RemoteRatio { ratio: 1.0 },
        }],
        emulator: None,
        new: true,
    };
    let plan = Plan {
        decisions: vec![decision],
    };
    let repins = BTreeMap::from([
        (("far".to_string(), "applied"), 2),
        (("plain".to_string(), "failed"), 1),
    ]);
    v.set_policy(&plan, &repins);
    let far = v.vm("far").unwrap();
    assert_eq!(
        far.policy.as_ref().unwrap().verdict,
        Verdict::SkippedCooldown
    );
    assert_eq!(far.vcpus[0].repin_recommended, Some(true));
    assert_eq!(far.vcpus[1].repin_recommended, Some(false));
    assert_eq!(far.repins, BTreeMap::from([("applied".to_string(), 2)]));
    let plain = v.vm("plain").unwrap();
    assert!(plain.policy.is_none() && plain.vcpus[0].repin_recommended.is_none());
    assert_eq!(plain.repins, BTreeMap::from([("failed".to_string(), 1)]));
}

#[test]
fn status_json_is_the_view_and_reads_back_whole() {
    let v = view();
    let json = serde_json::to_string(&v).unwrap();
    let back: HostView = serde_json::from_str(&json).unwrap();
    assert_eq!(back, v);
    assert!(json.contains("\"allowed_cpus\":\"0\""), "{json}");
    assert!(json.contains("\"source\":\"declared\""), "{json}");
}
