//! Hand-pinned VMs: after pinsight acted, pins it did not make are the operator's, left
//! alone (`skipped_operator`) unless `policy.reassert` or the VM's `reassert="on"`; a VM
//! pinsight never acted on is placed as ever; an interrupted action is not decided over.

use super::*;

/// A record of pinsight's last action on vCPU 0 (`result`, before 0, after 1), `secs`
/// before NOW, written for `uuid`.
fn record(uuid: &str, action: &str, state: &str, after: &str, secs: f64) -> String {
    format!(
        "<p:state xmlns:p=\"urn:pinsight:state:1\" uuid=\"{uuid}\"><p:last time=\"{}\" \
         action=\"{action}\" {state}><p:vcpu id=\"0\" before=\"0\" after=\"{after}\"/>\
         </p:last></p:state>",
        NOW - secs
    )
}

/// A VM on CPU 0 (the far socket) whose record says pinsight last left vCPU 0 on `after`.
fn hand_pinned(action: &str, after: &str) -> Vm {
    let mut vm = vm("vm", &[1], &["0"]);
    let state = "state=\"done\" result=\"applied\"";
    vm.spec
        .set_state(record("uuid-vm", action, state, after, 600.0));
    vm
}

#[test]
fn a_vm_hand_pinned_after_pinsights_repin_is_left_alone() {
    let t = topo("two-socket-gpu");
    let vms = [hand_pinned("repin", "1")];
    let plan = eval(config(), &t, &vms);
    let d = decision(&plan, "vm");
    assert_eq!(d.verdict, Verdict::SkippedOperator);
    assert_eq!(d.verdict.result_label(), Some("skipped_operator"));
    assert!(!d.verdict.recommends_move(), "nothing to wait for");
    assert!(
        d.reason
            .contains("vCPU 0 is on 0, pinsight left it on 1 since pinsight's last action"),
        "{}",
        d.reason
    );
    // Long after any cooldown: still the operator's.
    let mut policy = Policy::new(config());
    let later = eval_at(&mut policy, &t, &vms, &[], NOW + 10.0 * 300.0);
    assert_eq!(later.decisions[0].verdict, Verdict::SkippedOperator);
}

#[test]
fn reassert_moves_it_back_bounded_by_the_cooldown() {
    let t = topo("two-socket-gpu");
    let reassert = PolicyConfig {
        reassert: true,
        ..config()
    };
    let vms = [hand_pinned("repin", "1")];
    assert_eq!(
        eval(reassert.clone(), &t, &vms).decisions[0].verdict,
        Verdict::Repin
    );
    let cooling = PolicyConfig {
        cooldown_seconds: 900.0,
        ..reassert
    };
    assert_eq!(
        eval(cooling, &t, &vms).decisions[0].verdict,
        Verdict::SkippedCooldown
    );
    // The operator hands one VM back in its own element, whatever the daemon's default.
    let mut vms = vms;
    vms[0].spec.policy.reassert = Some(true);
    assert_eq!(
        eval(config(), &t, &vms).decisions[0].verdict,
        Verdict::Repin
    );
    let mut kept = hand_pinned("repin", "1");
    kept.spec.policy.reassert = Some(false);
    let reassert = PolicyConfig {
        reassert: true,
        ..config()
    };
    assert_eq!(
        eval(reassert, &t, &[kept]).decisions[0].verdict,
        Verdict::SkippedOperator
    );
}

#[test]
fn vms_pinsight_never_moved_or_put_back_itself_are_placed_as_ever() {
    let t = topo("two-socket-gpu");
    // Never acted on.
    let fresh = [vm("vm", &[1], &["0"])];
    assert_eq!(
        eval(config(), &t, &fresh).decisions[0].verdict,
        Verdict::Repin
    );
    // pinsight restore put CPU 0 back: those pins are pinsight's, so it places the VM
    // again after the cooldown.
    let restored = [hand_pinned("restore", "0")];
    assert_eq!(
        eval(config(), &t, &restored).decisions[0].verdict,
        Verdict::Repin
    );
    // A failed repin left vCPU 0 where it was (its "before"): not someone else's change.
    let mut failed = vm("vm", &[1], &["0"]);
    let state = "state=\"done\" result=\"failed\"";
    failed
        .spec
        .set_state(record("uuid-vm", "repin", state, "1", 600.0));
    assert_eq!(
        eval(config(), &t, &[failed]).decisions[0].verdict,
        Verdict::Repin
    );
    // A record written for another UUID (a re-created VM): this VM is new to pinsight, with
    // no cooldown and no hand pins to respect.
    let mut recreated = vm("vm", &[1], &["0"]);
    let state = "state=\"done\" result=\"applied\"";
    recreated
        .spec
        .set_state(record("uuid-old", "repin", state, "1", 1.0));
    assert_eq!(
        eval(config(), &t, &[recreated]).decisions[0].verdict,
        Verdict::Repin
    );
}

#[test]
fn an_action_left_in_progress_is_not_decided_over() {
    let t = topo("two-socket-gpu");
    let mut vm = vm("vm", &[1], &["0"]);
    vm.spec.set_state(record(
        "uuid-vm",
        "repin",
        "state=\"in_progress\"",
        "1",
        1.0,
    ));
    let plan = eval(config(), &t, &[vm]);
    let d = decision(&plan, "vm");
    assert_eq!(d.verdict, Verdict::Interrupted);
    assert_eq!(d.verdict.result_label(), None, "reconciled, not counted");
    assert!(
        d.reason.contains("stopped in the middle of its repin"),
        "{}",
        d.reason
    );
}

#[test]
fn a_vm_recreated_under_the_same_name_starts_without_the_old_cooldown() {
    let t = topo("two-socket-gpu");
    let mut policy = Policy::new(config());
    policy.record_action("uuid-vm", NOW);
    let old = [vm("vm", &[1], &["0"])];
    let verdict = |p: &mut Policy, vms: &[Vm], dt: f64| {
        eval_at(p, &t, vms, &[], NOW + dt).decisions[0].verdict
    };
    assert_eq!(verdict(&mut policy, &old, 10.0), Verdict::SkippedCooldown);
    let mut new = old.clone();
    new[0].uuid = "uuid-vm-2".into();
    assert_eq!(verdict(&mut policy, &new, 11.0), Verdict::Repin);
}
