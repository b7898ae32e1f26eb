//! The policy loop inside the engine: evaluate the policy after each accounting round, log
//! and count every new decision, and in enforce mode act through `remediate`.

use std::collections::BTreeMap;

use crate::config::{Mode, PolicyConfig};
use crate::inventory::worker::{Poll, Ticket, Worker};
use crate::inventory::Vm;
use crate::policy::record::ActionResult;
use crate::policy::{unix_now, Inputs, Plan, Policy, Verdict, VmDecision};
use crate::remediate;
use crate::topology::Topology;
use crate::view::HostView;

/// The policy's state in the daemon and what it publishes.
pub struct PolicyLoop {
    mode: Mode,
    policy: Policy,
    /// pinsight_repins_total by (domain, result).
    pub repins: BTreeMap<(String, &'static str), u64>,
    /// The last evaluation.
    pub plan: Plan,
    /// Actions handed to the libvirt worker whose answer has not come yet.
    in_flight: Vec<InFlight>,
}

/// An action on its way through the libvirt worker.
struct InFlight {
    domain: String,
    moves: String,
    reason: String,
    answer: Ticket<Result<(), String>>,
}

impl PolicyLoop {
    /// The loop for `config`; `None` in observe mode (nothing is evaluated).
    pub fn new(config: &PolicyConfig) -> Option<PolicyLoop> {
        if config.mode == Mode::Observe {
            return None;
        }
        tracing::info!(
            mode = config.mode.as_str(),
            remote_ratio_high = config.remote_ratio_high,
            remote_ratio_clear = config.remote_ratio_clear,
            proactive = config.proactive,
            cooldown_seconds = config.cooldown_seconds,
            max_repins_per_minute = config.max_repins_per_minute,
            reserved_cpus = %config.reserved_cpus,
            max_oversubscription = config.max_oversubscription,
            "repin policy on"
        );
        Some(PolicyLoop {
            mode: config.mode,
            policy: Policy::new(config.clone()),
            repins: BTreeMap::new(),
            plan: Plan::default(),
            in_flight: Vec::new(),
        })
    }

    /// Applies reloaded settings to `current`: switched on, off, or changed in place (keeping
    /// its hysteresis, cooldowns, rate-limit history and counters).
    pub fn reconfigure(current: &mut Option<PolicyLoop>, config: &PolicyConfig) {
        match current.as_mut() {
            Some(_) if config.mode == Mode::Observe => {
                tracing::info!("repin policy off (mode observe)");
                *current = None;
            }
            Some(running) => {
                running.mode = config.mode;
                running.policy.set_config(config.clone());
                tracing::info!(
                    mode = config.mode.as_str(),
                    "repin policy settings reloaded"
                );
            }
            None => *current = PolicyLoop::new(config),
        }
    }

    /// Evaluates this tick's view and, in enforce mode, hands each action to the libvirt
    /// worker; [`PolicyLoop::settle`] takes their answers at later ticks. A VM with an action
    /// on its way is not acted on again until it is answered.
    pub fn run(&mut self, topology: &Topology, vms: &[Vm], view: &HostView, worker: &mut Worker) {
        let ratios = view.vcpu_remote_ratios();
        let now = unix_now();
        let plan = self.policy.evaluate(&Inputs {
            topology,
            vms,
            ratios: &ratios,
            now,
        });
        for d in &plan.decisions {
            let act = self.mode == Mode::Enforce && d.verdict == Verdict::Repin;
            if d.new && !act {
                self.report(d);
            }
            if !act {
                continue;
            }
            let Some(vm) = vms.iter().find(|vm| vm.name == d.domain) else {
                continue;
            };
            if self.in_flight.iter().any(|f| f.domain == d.domain) {
                continue;
            }
            self.policy.record_action(&d.domain, now);
            let (vm, decision) = (vm.clone(), d.clone());
            let persistent = self.policy.config().persistent;
            let answer = worker.submit(&format!("repin domain {}", d.domain), move |lv| {
                let domain = lv.lookup(&vm.name).map_err(|e| e.to_string())?;
                remediate::apply(&domain, &vm, &decision, persistent, now)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
            self.in_flight.push(InFlight {
                domain: d.domain.clone(),
                moves: moves(d),
                reason: d.reason.clone(),
                answer,
            });
        }
        self.plan = plan;
    }

    /// Takes the answers of actions on their way, counting and logging each. Returns true
    /// when a VM's pins were changed (so the caller rescans before the next evaluation).
    pub fn settle(&mut self, worker: &Worker) -> bool {
        let mut changed = false;
        let mut pending = Vec::new();
        for mut f in std::mem::take(&mut self.in_flight) {
            let result = match f.answer.poll(worker) {
                Poll::Pending => {
                    pending.push(f);
                    continue;
                }
                Poll::Done(result) => result,
                // The call hung and its worker was abandoned: the action may still finish
                // when libvirtd answers again; the state journal says where it stopped.
                Poll::Lost(why) => Err(format!("libvirt did not answer: {why}")),
            };
            match result {
                Ok(()) => {
                    changed = true;
                    self.count(&f.domain, ActionResult::Applied.as_str());
                    tracing::info!(domain = %f.domain, moves = %f.moves, reason = %f.reason, "repinned");
                }
                Err(e) => {
                    self.count(&f.domain, ActionResult::Failed.as_str());
                    tracing::warn!(domain = %f.domain, moves = %f.moves, error = %e, "repin failed");
                }
            }
        }
        self.in_flight = pending;
        changed
    }

    fn report(&mut self, d: &VmDecision) {
        match d.verdict {
            Verdict::Placed => {
                tracing::debug!(domain = %d.domain, "placed well");
                return;
            }
            Verdict::Repin => {
                tracing::info!(domain = %d.domain, moves = %moves(d), reason = %d.reason, "repin recommended (mode recommend: not acting)");
                return;
            }
            _ => {}
        }
        tracing::info!(domain = %d.domain, verdict = ?d.verdict, moves = %moves(d), reason = %d.reason, "not repinning");
        if let Some(result) = d.verdict.result_label() {
            self.count(&d.domain, result);
        }
    }

    fn count(&mut self, domain: &str, result: &'static str) {
        *self.repins.entry((domain.to_string(), result)).or_default() += 1;
    }

    /// Drops the counters of VMs that are gone, so their series end with them.
    pub fn forget_gone(&mut self, vms: &[Vm]) {
        self.repins
            .retain(|(domain, _), _| vms.iter().any(|vm| &vm.name == domain));
    }
}

/// "vCPU 0 0 -> 1, emulator 0-1 -> 1" for the log.
fn moves(d: &VmDecision) -> String {
    let mut parts: Vec<String> = d
        .vcpus
        .iter()
        .map(|m| {
            let after = m.after.as_ref().map_or("-".to_string(), |a| a.to_string());
            format!("vCPU {} {} -> {after}", m.vcpu, m.before)
        })
        .collect();
    if let Some(e) = &d.emulator {
        parts.push(format!("emulator {} -> {}", e.before, e.after));
    }
    parts.join(", ")
}
