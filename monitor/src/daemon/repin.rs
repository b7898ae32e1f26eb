//! The policy loop inside the engine: reconcile any action a previous run left in progress,
//! evaluate the policy after each accounting round, log and count every new decision, and in
//! enforce mode act through `remediate`. Domains are looked up by UUID, never by name.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::config::{Mode, PolicyConfig};
use crate::inventory::{Libvirt, Vm};
use crate::policy::record::{describe, ActionResult, Record};
use crate::policy::{unix_now, Inputs, Plan, Policy, Verdict, VmDecision};
use crate::remediate::{self, Reconciled, RemediateError};
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
    /// Interrupted actions already handled or tried, by (UUID, the state element's text), so
    /// each is reconciled (or reported) once: `Some(t)`, a try at `t` that failed for a
    /// passing reason, retried after `RECONCILE_RETRY`; `None`, not again until the record
    /// or the mode changes (reported in recommend mode; someone else moved a vCPU).
    reconciled: BTreeMap<(String, String), Option<Instant>>,
}

/// How long a reconcile that failed waits before it is tried again.
const RECONCILE_RETRY: Duration = Duration::from_secs(10);

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
            reconciled: BTreeMap::new(),
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
                if running.mode != config.mode {
                    // Enforce now reconciles what recommend only reported.
                    running.reconciled.clear();
                }
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

    /// Evaluates this tick's view and, in enforce mode, acts. Returns true when a VM's pins
    /// were changed (so the caller rescans before the next evaluation).
    pub fn run(
        &mut self,
        topology: &Topology,
        vms: &[Vm],
        view: &HostView,
        libvirt: &mut Libvirt,
    ) -> bool {
        let mut changed = self.reconcile_interrupted(topology, vms, libvirt);
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
            self.policy.record_action(&vm.uuid, now);
            let persistent = self.policy.config().persistent;
            let result = remediate::lookup(libvirt, vm)
                .map_err(|e| (ActionResult::Failed.as_str(), e.to_string()))
                .and_then(|domain| {
                    remediate::apply(&domain, vm, d, persistent, now).map_err(|e| match e {
                        // Compare-and-set: moved by someone else since the decision.
                        RemediateError::Changed { .. } => ("skipped_operator", e.to_string()),
                        e => (ActionResult::Failed.as_str(), e.to_string()),
                    })
                });
            // Pins or the record may have changed whatever the outcome: rescan first.
            changed = true;
            match result {
                Ok(_) => {
                    self.count(&d.domain, ActionResult::Applied.as_str());
                    tracing::info!(domain = %d.domain, moves = %moves(d), reason = %d.reason, "repinned");
                }
                Err((result, e)) => {
                    self.count(&d.domain, result);
                    tracing::warn!(domain = %d.domain, moves = %moves(d), result, error = %e, "repin not made");
                }
            }
        }
        self.plan = plan;
        changed
    }

    /// Reconciles every VM whose record (as of the last rescan) holds an action left in
    /// progress: at the first evaluation after the daemon starts and after each rescan that
    /// shows one. Only enforce mode writes; the other modes say what awaits. Returns true
    /// when pins or records changed.
    fn reconcile_interrupted(
        &mut self,
        topology: &crate::topology::Topology,
        vms: &[Vm],
        libvirt: &mut Libvirt,
    ) -> bool {
        let live: Vec<(String, String)> = vms
            .iter()
            .filter_map(|vm| Some((vm.uuid.clone(), vm.spec.state.clone()?)))
            .collect();
        self.reconciled.retain(|key, _| live.contains(key));
        let mut changed = false;
        for vm in vms {
            let Some(xml) = vm.spec.state.as_deref() else {
                continue;
            };
            let Ok(record) = Record::parse(xml) else {
                continue;
            };
            let Some(action) = record.in_progress().filter(|_| record.belongs_to(&vm.uuid)) else {
                continue;
            };
            let key = (vm.uuid.clone(), xml.to_string());
            match self.reconciled.get(&key) {
                Some(None) => continue,
                Some(Some(t)) if t.elapsed() < RECONCILE_RETRY => continue,
                _ => {}
            }
            if self.mode != Mode::Enforce {
                self.reconciled.insert(key, None);
                tracing::warn!(domain = %vm.name, action = %describe(action), "an action was left in progress by a pinsight that stopped mid-way; enforce mode reconciles it, pinsight restore undoes it");
                continue;
            }
            let started = Instant::now();
            let result = remediate::lookup(libvirt, vm).and_then(|domain| {
                remediate::reconcile(&domain, vm, topology, self.policy.config(), unix_now())
            });
            let seconds = started.elapsed().as_secs_f64();
            changed = true;
            let retry = match &result {
                // Someone else moved a vCPU: retrying cannot help; the verdict says so.
                Err(RemediateError::Changed { .. }) => None,
                _ => Some(Instant::now()),
            };
            self.reconciled.insert(key, retry);
            match result {
                Ok(Reconciled::Nothing) => {}
                Ok(Reconciled::Completed(done)) => {
                    tracing::info!(domain = %vm.name, uuid = %vm.uuid, outcome = "completed", action = %describe(&done), seconds, "reconciled an interrupted action")
                }
                Ok(Reconciled::RolledBack(done)) => {
                    tracing::warn!(domain = %vm.name, uuid = %vm.uuid, outcome = "rolled_back", action = %describe(&done), seconds, "reconciled an interrupted action")
                }
                Err(e) => {
                    tracing::warn!(domain = %vm.name, uuid = %vm.uuid, error = %e, "reconciling an interrupted action failed (retried after a failed call, not over someone else's change: pinsight restore ends it)")
                }
            }
        }
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
