//! One evaluation: per VM, which vCPUs are misplaced, whether the guard rails let the VM be
//! moved, and where to.

use super::placement::{self, Load, Rules};
use super::record::{utc, Record};
use super::{EmulatorMove, Inputs, Plan, Policy, Trigger, VcpuMove, Verdict, VmDecision};
use crate::cpuset::CpuSet;
use crate::inventory::Vm;

/// Seconds the rate limit looks back.
const RATE_WINDOW: f64 = 60.0;

pub(super) fn evaluate(policy: &mut Policy, inputs: &Inputs) -> Plan {
    let topology = inputs.topology;
    let online: CpuSet = topology.cpus.keys().copied().collect();
    let now = inputs.now;
    while policy
        .actions
        .front()
        .is_some_and(|t| now - t >= RATE_WINDOW)
    {
        policy.actions.pop_front();
    }
    let mut actions_in_window = policy.actions.len();
    let mut load = Load::of(inputs.vms, topology);
    let mut plan = Plan::default();
    for vm in inputs.vms.iter().filter(|vm| !vm.gpu_nodes.is_empty()) {
        let mut d = decide_vm(policy, inputs, vm, &online, &mut load, actions_in_window);
        if d.verdict == Verdict::Repin {
            actions_in_window += 1;
        }
        let signature = signature(&d);
        d.new = policy.reported.get(&vm.name) != Some(&signature);
        policy.reported.insert(vm.name.clone(), signature);
        plan.decisions.push(d);
    }
    plan
}

/// What makes a situation the same as the last one reported: the verdict and the pins.
fn signature(d: &VmDecision) -> String {
    let moves: Vec<String> = d
        .vcpus
        .iter()
        .map(|m| format!("{}:{}", m.vcpu, m.before))
        .collect();
    format!("{:?} {}", d.verdict, moves.join(" "))
}

fn decide_vm(
    policy: &mut Policy,
    inputs: &Inputs,
    vm: &Vm,
    online: &CpuSet,
    load: &mut Load,
    actions_in_window: usize,
) -> VmDecision {
    let config = policy.config.clone();
    let topology = inputs.topology;
    let far = topology.far_cpus(&vm.gpu_nodes);
    let mut decision = VmDecision {
        domain: vm.name.clone(),
        gpu_nodes: vm.gpu_nodes.clone(),
        verdict: Verdict::Placed,
        reason: String::new(),
        vcpus: Vec::new(),
        emulator: None,
        new: false,
    };
    for t in &vm.vcpus {
        let key = (vm.name.clone(), t.vcpu);
        let ratio = inputs.ratios.get(&key).copied();
        let was_hot = policy.hot.get(&key).copied();
        let hot = match ratio {
            Some(r) if r >= config.remote_ratio_high => Some(r),
            Some(r) if r <= config.remote_ratio_clear => None,
            // Between the thresholds: keep the state; no reading (idle): keep it and its figure.
            Some(r) => was_hot.map(|_| r),
            None => was_hot,
        };
        match hot {
            Some(r) => policy.hot.insert(key, r),
            None => policy.hot.remove(&key),
        };
        let far_allowed = t.allowed_cpus.intersection(&far);
        // A vCPU already confined to the GPU's socket cannot run remote, whatever its
        // (window-old) share says.
        if far_allowed.is_empty() {
            continue;
        }
        let trigger = match hot {
            Some(ratio) => Trigger::RemoteRatio { ratio },
            None if config.proactive => Trigger::AllowedFarSocket {
                far_cpus: far_allowed,
            },
            _ => continue,
        };
        decision.vcpus.push(VcpuMove {
            vcpu: t.vcpu,
            before: t.allowed_cpus.clone(),
            after: None,
            trigger,
        });
    }
    if decision.vcpus.is_empty() {
        decision.reason = "no vCPU may run on a socket without the VM's GPUs".into();
        return decision;
    }
    let why: Vec<String> = decision
        .vcpus
        .iter()
        .map(|m| format!("vCPU {} {}", m.vcpu, m.trigger))
        .collect();
    let why = why.join(", ");
    let record = vm.spec.state_record.clone().transpose();
    let record = match record {
        // A record written for another UUID (a domain re-created from a copied XML) says
        // nothing about this VM.
        Ok(Some(record)) if !record.belongs_to(&vm.uuid) => Record::default(),
        Ok(record) => record.unwrap_or_default(),
        Err(e) => {
            return verdict(
                decision,
                Verdict::Unrecorded,
                format!("{why}; not moved: {e} (a change could not be undone)"),
            );
        }
    };
    if let Some(reason) = opted_out(vm, config.opt_in) {
        return verdict(decision, Verdict::SkippedOptout, format!("{why}; {reason}"));
    }
    if !config.move_orchestrated {
        if let Some(reason) = orchestrated(vm, &record) {
            return verdict(
                decision,
                Verdict::SkippedOrchestrator,
                format!("{why}; {reason}; not moved (policy.move_orchestrated = false)"),
            );
        }
    }
    if let Some(action) = record.in_progress() {
        return verdict(
            decision,
            Verdict::Interrupted,
            format!(
                "{why}; not moved: pinsight stopped in the middle of its {} of {} (reconciled \
                 in enforce mode, or undone by pinsight restore)",
                action.action.as_str(),
                utc(action.time)
            ),
        );
    }
    let reassert = vm.spec.policy.reassert.unwrap_or(config.reassert);
    if !reassert {
        if let Some(change) = changed_by_someone_else(vm, &record) {
            return verdict(
                decision,
                Verdict::SkippedOperator,
                format!(
                    "{why}; not moved: {change} since pinsight's last action, so someone else \
                     placed it (policy.reassert = false; pinsight restore or \
                     <pinsight:policy reassert=\"on\"/> hands it back)"
                ),
            );
        }
    }
    // The vCPUs being moved free what they held.
    let mut trial = load.clone();
    for m in &decision.vcpus {
        trial.remove(&vm.name, &m.before, online);
    }
    let rules = Rules {
        reserved: &config.reserved_cpus,
        max_oversubscription: config.max_oversubscription,
        keep_smt_cores: config.keep_smt_cores,
    };
    let n = decision.vcpus.len();
    let target = match placement::choose(topology, &vm.gpu_nodes, n, &vm.name, &trial, &rules) {
        Ok(target) => target,
        Err(no_room) => {
            return verdict(
                decision,
                Verdict::NoCapacity,
                format!("{why}; no room: {no_room}"),
            );
        }
    };
    for m in &mut decision.vcpus {
        m.after = Some(target.cpus.clone());
    }
    if config.pin_emulator {
        decision.emulator = emulator_move(vm, online, &far, &target.cpus, &decision.vcpus);
    }
    let place = if target.same_socket_fallback {
        format!(
            "to CPUs {} on the GPU's socket (the GPU's node has no room)",
            target.cpus
        )
    } else {
        format!("to CPUs {} on the GPU's node", target.cpus)
    };
    let last = record
        .last
        .as_ref()
        .map(|a| a.time)
        .into_iter()
        .chain(policy.acted.get(&vm.uuid).copied())
        .fold(None, |acc: Option<f64>, t| {
            Some(acc.map_or(t, |a| a.max(t)))
        });
    if let Some(last) = last {
        let since = inputs.now - last;
        if since < config.cooldown_seconds {
            return verdict(
                decision,
                Verdict::SkippedCooldown,
                format!(
                    "{why}; would move {place}, but acted {since:.0}s ago (cooldown_seconds = {})",
                    config.cooldown_seconds
                ),
            );
        }
    }
    if actions_in_window >= config.max_repins_per_minute as usize {
        return verdict(
            decision,
            Verdict::RateLimited,
            format!(
                "{why}; would move {place}, but {actions_in_window} repins in the last minute \
                 (max_repins_per_minute = {})",
                config.max_repins_per_minute
            ),
        );
    }
    *load = trial;
    load.add(&vm.name, &target.cpus, n as f64);
    verdict(decision, Verdict::Repin, format!("{why}; move {place}"))
}

fn verdict(mut d: VmDecision, verdict: Verdict, reason: String) -> VmDecision {
    d.verdict = verdict;
    d.reason = reason;
    d
}

/// Why the operator's metadata keeps pinsight off this VM, if it does.
fn opted_out(vm: &Vm, opt_in: bool) -> Option<String> {
    match vm.spec.policy.repin {
        Some(false) => Some("opted out: operator metadata says <policy repin=\"off\"/>".into()),
        None if opt_in => Some(
            "not opted in: policy.opt_in is on and the operator metadata has no \
             <policy repin=\"on\"/>"
                .into(),
        ),
        _ => None,
    }
}

/// How the VM's pins differ from what pinsight's last action left, if they do ("vCPU 0 is
/// on 0, pinsight left it on 1"); `None` for a VM pinsight never acted on.
fn changed_by_someone_else(vm: &Vm, record: &Record) -> Option<String> {
    let (vcpus, emulator) = record.last.as_ref()?.left_pins()?;
    let mut changes: Vec<String> = vm
        .vcpus
        .iter()
        .filter_map(|t| {
            let left = vcpus.get(&t.vcpu)?;
            (left != &t.allowed_cpus).then(|| {
                format!(
                    "vCPU {} is on {}, pinsight left it on {left}",
                    t.vcpu, t.allowed_cpus
                )
            })
        })
        .collect();
    if let (Some(left), Some(now)) = (emulator, vm.spec.emulator_pin.as_ref()) {
        if &left != now {
            changes.push(format!(
                "the emulator threads are on {now}, pinsight left them on {left}"
            ));
        }
    }
    (!changes.is_empty()).then(|| changes.join(", "))
}

/// Why an orchestrator owns this VM's pins, if it does: Nova started it and `<cputune>` pins
/// vCPUs to CPUs pinsight did not choose.
fn orchestrated(vm: &Vm, record: &Record) -> Option<String> {
    let nova = vm.spec.nova.as_ref()?;
    let ours = record.pinned_by_pinsight();
    let foreign: Vec<String> = vm
        .spec
        .vcpu_pins
        .iter()
        .filter(|(vcpu, cpus)| ours.get(vcpu) != Some(cpus))
        .map(|(vcpu, cpus)| format!("{vcpu}->{cpus}"))
        .collect();
    if foreign.is_empty() {
        return None;
    }
    Some(format!(
        "pinned by its orchestrator (Nova instance {}; <vcpupin> {})",
        nova.instance_name.as_deref().unwrap_or("?"),
        foreign.join(" ")
    ))
}

/// The emulator threads go where the VM's vCPUs will be, if they may now run far.
fn emulator_move(
    vm: &Vm,
    online: &CpuSet,
    far: &CpuSet,
    target: &CpuSet,
    moves: &[VcpuMove],
) -> Option<EmulatorMove> {
    let before = vm
        .spec
        .emulator_pin
        .clone()
        .or_else(|| vm.spec.vcpu_cpuset.clone())
        .unwrap_or_else(|| online.clone());
    if before.intersection(far).is_empty() {
        return None;
    }
    // The new CPUs plus those of vCPUs that stay, if they are already confined near the GPU.
    let mut after: CpuSet = target.clone();
    for t in &vm.vcpus {
        let moved = moves.iter().any(|m| m.vcpu == t.vcpu);
        if !moved && t.allowed_cpus.intersection(far).is_empty() {
            after = after.iter().chain(t.allowed_cpus.iter()).collect();
        }
    }
    Some(EmulatorMove { before, after })
}
