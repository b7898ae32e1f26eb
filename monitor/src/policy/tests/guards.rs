//! The guard rails: thresholds and hysteresis, cooldown, rate limit, opt-out, orchestrator.

use super::*;

#[test]
fn remote_share_thresholds_with_hysteresis_when_not_proactive() {
    let t = topo("two-socket-gpu");
    let config = PolicyConfig {
        proactive: false,
        ..config()
    };
    let mut policy = Policy::new(config);
    let vms = [vm("vm", &[1], &["0-1"])];
    let verdict_at = |p: &mut Policy, r: Option<f64>| {
        let ratios: Vec<(&str, u32, f64)> = r.map(|r| ("vm", 0, r)).into_iter().collect();
        eval_at(p, &t, &vms, &ratios, NOW).decisions[0].verdict
    };
    assert_eq!(
        verdict_at(&mut policy, Some(0.4)),
        Verdict::Placed,
        "below high"
    );
    assert_eq!(verdict_at(&mut policy, None), Verdict::Placed, "no reading");
    assert_eq!(
        verdict_at(&mut policy, Some(0.5)),
        Verdict::Repin,
        "reaches high"
    );
    assert_eq!(
        verdict_at(&mut policy, Some(0.3)),
        Verdict::Repin,
        "between: stays misplaced"
    );
    assert_eq!(
        verdict_at(&mut policy, None),
        Verdict::Repin,
        "idle: keeps its state"
    );
    assert_eq!(
        verdict_at(&mut policy, Some(0.2)),
        Verdict::Placed,
        "falls to clear"
    );
    assert_eq!(
        verdict_at(&mut policy, Some(0.45)),
        Verdict::Placed,
        "between: stays placed"
    );
    let plan = eval_at(&mut policy, &t, &vms, &[("vm", 0, 0.9)], NOW);
    assert_eq!(
        plan.decisions[0].vcpus[0].trigger,
        Trigger::RemoteRatio { ratio: 0.9 }
    );
    // A high share from the window's past means nothing once the vCPU is confined near.
    let near = [vm("vm", &[1], &["1"])];
    let plan = eval_at(&mut policy, &t, &near, &[("vm", 0, 0.9)], NOW);
    assert_eq!(plan.decisions[0].verdict, Verdict::Placed);
}

#[test]
fn cooldown_from_this_process_and_from_the_state_element() {
    let t = topo("two-socket-gpu");
    let vms = [vm("vm", &[1], &["0"])];
    let mut policy = Policy::new(config());
    policy.record_action("uuid-vm", NOW);
    let d = eval_at(&mut policy, &t, &vms, &[], NOW + 10.0)
        .decisions
        .remove(0);
    assert_eq!(d.verdict, Verdict::SkippedCooldown);
    assert_eq!(after(&d), ["1"], "the target is still shown");
    assert!(
        d.reason.contains("acted 10s ago (cooldown_seconds = 300)"),
        "{}",
        d.reason
    );
    assert!(d.verdict.recommends_move());
    let d = eval_at(&mut policy, &t, &vms, &[], NOW + 300.0)
        .decisions
        .remove(0);
    assert_eq!(d.verdict, Verdict::Repin);

    // A fresh process (daemon restart) reads the last action's time from the domain.
    let mut vms = vms;
    vms[0].spec.set_state(format!(
        "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last time=\"{}\" action=\"repin\" \
         result=\"applied\"/></p:state>",
        NOW - 60.0
    ));
    let plan = eval(config(), &t, &vms);
    assert_eq!(plan.decisions[0].verdict, Verdict::SkippedCooldown);
    let plan = eval(
        PolicyConfig {
            cooldown_seconds: 30.0,
            ..config()
        },
        &t,
        &vms,
    );
    assert_eq!(plan.decisions[0].verdict, Verdict::Repin);
}

#[test]
fn host_wide_rate_limit_over_a_sliding_minute() {
    let t = topo("two-socket-gpu");
    let config = PolicyConfig {
        max_repins_per_minute: 2,
        max_oversubscription: 10.0,
        ..config()
    };
    let vms = [
        vm("a", &[1], &["0"]),
        vm("b", &[1], &["0"]),
        vm("c", &[1], &["0"]),
    ];
    let mut policy = Policy::new(config);
    let plan = eval_at(&mut policy, &t, &vms, &[], NOW);
    let verdicts: Vec<Verdict> = plan.decisions.iter().map(|d| d.verdict).collect();
    assert_eq!(
        verdicts,
        [Verdict::Repin, Verdict::Repin, Verdict::RateLimited]
    );
    assert!(
        plan.decisions[2]
            .reason
            .contains("2 repins in the last minute"),
        "{}",
        plan.decisions[2].reason
    );
    // Nothing was recorded (recommend mode): the budget is whole again.
    assert_eq!(
        eval_at(&mut policy, &t, &vms, &[], NOW).decisions[1].verdict,
        Verdict::Repin
    );
    policy.record_action("uuid-a", NOW);
    policy.record_action("uuid-b", NOW + 1.0);
    let only_c = [vms[2].clone()];
    let at = |p: &mut Policy, dt: f64| eval_at(p, &t, &only_c, &[], NOW + dt).decisions[0].verdict;
    assert_eq!(at(&mut policy, 59.0), Verdict::RateLimited);
    assert_eq!(
        at(&mut policy, 60.5),
        Verdict::Repin,
        "a's action left the window"
    );
}

#[test]
fn operator_opt_out_and_opt_in() {
    let t = topo("two-socket-gpu");
    let mut off = vm("off", &[1], &["0"]);
    off.spec.policy.repin = Some(false);
    let mut on = vm("on", &[1], &["0"]);
    on.spec.policy.repin = Some(true);
    let plain = vm("plain", &[1], &["0"]);
    let vms = [off, on, plain];
    let plan = eval(
        PolicyConfig {
            max_oversubscription: 3.0,
            ..config()
        },
        &t,
        &vms,
    );
    let d = decision(&plan, "off");
    assert_eq!(d.verdict, Verdict::SkippedOptout);
    assert!(d.reason.contains("repin=\"off\""), "{}", d.reason);
    assert!(!d.recommends_moving(0));
    assert_eq!(decision(&plan, "on").verdict, Verdict::Repin);
    assert_eq!(decision(&plan, "plain").verdict, Verdict::Repin);
    let opt_in = PolicyConfig {
        opt_in: true,
        max_oversubscription: 3.0,
        ..config()
    };
    let plan = eval(opt_in, &t, &vms);
    assert_eq!(decision(&plan, "on").verdict, Verdict::Repin);
    assert_eq!(decision(&plan, "plain").verdict, Verdict::SkippedOptout);
    assert!(decision(&plan, "plain").reason.contains("not opted in"));
}

#[test]
fn orchestrator_pins_are_reported_not_moved_unless_configured() {
    let t = topo("two-socket-gpu");
    let mut nova = vm("nova", &[1], &["0"]);
    nova.spec.nova = Some(NovaInfo {
        instance_name: Some("web-1".into()),
        ..Default::default()
    });
    nova.spec.vcpu_pins.insert(0, cpus("0"));
    let vms = [nova];
    let d = eval(config(), &t, &vms).decisions.remove(0);
    assert_eq!(d.verdict, Verdict::SkippedOrchestrator);
    assert!(
        d.reason.contains("Nova instance web-1; <vcpupin> 0->0"),
        "{}",
        d.reason
    );
    let moving = PolicyConfig {
        move_orchestrated: true,
        ..config()
    };
    assert_eq!(eval(moving, &t, &vms).decisions[0].verdict, Verdict::Repin);
    // Nova metadata without pins: Nova left placement alone, so pinsight may place it.
    let mut unpinned = vms[0].clone();
    unpinned.spec.vcpu_pins.clear();
    assert_eq!(
        eval(config(), &t, &[unpinned]).decisions[0].verdict,
        Verdict::Repin
    );
    // Pins pinsight itself set (its state element says so) are not an orchestrator's.
    let mut ours = vms[0].clone();
    ours.spec.set_state(
        "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last time=\"1\" action=\"repin\" \
         result=\"applied\"><p:vcpu id=\"0\" before=\"0-1\" after=\"0\"/></p:last></p:state>",
    );
    assert_eq!(
        eval(config(), &t, &[ours]).decisions[0].verdict,
        Verdict::Repin
    );
}

#[test]
fn an_unreadable_state_element_keeps_the_vm_unmoved() {
    let t = topo("two-socket-gpu");
    let mut bad = vm("bad", &[1], &["0"]);
    bad.spec
        .set_state("<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last time=\"x\"/></p:state>");
    let d = eval(config(), &t, &[bad]).decisions.remove(0);
    assert_eq!(d.verdict, Verdict::Unrecorded);
    assert_eq!(d.verdict.result_label(), Some("failed"));
    assert!(d.reason.contains("could not be undone"), "{}", d.reason);
}

#[test]
fn each_situation_is_new_once() {
    let t = topo("two-socket-gpu");
    let vms = [vm("vm", &[1], &["0"]), vm("holder", &[], &["1"])];
    let mut policy = Policy::new(config());
    let first = eval_at(&mut policy, &t, &vms, &[], NOW);
    assert!(first.decisions[0].new && first.decisions[0].verdict == Verdict::NoCapacity);
    assert!(!eval_at(&mut policy, &t, &vms, &[], NOW + 1.0).decisions[0].new);
    let freed = [vms[0].clone()];
    let changed = eval_at(&mut policy, &t, &freed, &[], NOW + 2.0);
    assert!(changed.decisions[0].new && changed.decisions[0].verdict == Verdict::Repin);
}
