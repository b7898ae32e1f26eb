//! The policy loop inside the engine: reconcile any action a previous run left in progress,
//! evaluate the policy after each accounting round, log and count every new decision, and in
//! enforce mode act through `remediate`. Every libvirt call goes to the libvirt worker (with
//! its deadline); the answers are taken at later ticks by [`PolicyLoop::settle`]. Domains are
//! looked up by UUID, never by name. A VM without libvirt (a QEMU found through its QMP
//! socket) goes the same way through `remediate`'s process backend, on a short-lived thread
//! of its own (a few sched_setaffinity calls and a bounded state-file write), so neither a
//! slow disk nor a hung libvirtd holds up the other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Instant;

use crate::config::{Mode, PolicyConfig};
use crate::inventory::worker::Worker;
use crate::inventory::{Vm, Vmm};
use crate::policy::record::ActionResult;
use crate::policy::{unix_now, Inputs, Plan, Policy, Verdict, VmDecision};
use crate::remediate::{self, ProcessVm};
use crate::topology::Topology;
use crate::view::HostView;
use jobs::{apply_error, Answer, InFlight, Job};
use process::{spawn_process_job, Pending, PROC};

mod jobs;
mod process;
mod reconcile;

/// The policy's state in the daemon and what it publishes.
pub struct PolicyLoop {
    mode: Mode,
    policy: Policy,
    /// pinsight_repins_total by (domain, result).
    pub repins: BTreeMap<(String, &'static str), u64>,
    /// The last evaluation.
    pub plan: Plan,
    /// Interrupted actions already handled or tried, by (UUID, the state element's text), so
    /// each is reconciled (or reported) once: `Some(t)`, a try at `t` (retried after
    /// `RECONCILE_RETRY` if it failed for a passing reason); `None`, not again until the
    /// record or the mode changes (reported in recommend mode; someone else moved a vCPU).
    reconciled: BTreeMap<(String, String), Option<Instant>>,
    /// Actions handed to the libvirt worker whose answer has not come yet.
    in_flight: Vec<InFlight>,
    /// Where the records of VMs without libvirt live (`[qmp] state_dir`).
    state_dir: PathBuf,
    /// Removes the state files of QEMUs that exited.
    sweeper: process::Sweeper,
}

impl PolicyLoop {
    /// The loop for `config`; `None` in observe mode (nothing is evaluated).
    pub fn new(config: &PolicyConfig, state_dir: &Path) -> Option<PolicyLoop> {
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
            reassert = config.reassert,
            state_dir = %state_dir.display(),
            "repin policy on"
        );
        Some(PolicyLoop {
            mode: config.mode,
            policy: Policy::new(config.clone()),
            repins: BTreeMap::new(),
            plan: Plan::default(),
            reconciled: BTreeMap::new(),
            in_flight: Vec::new(),
            state_dir: state_dir.to_path_buf(),
            sweeper: process::Sweeper::default(),
        })
    }

    /// Applies reloaded settings to `current`: switched on, off, or changed in place (keeping
    /// its hysteresis, cooldowns, rate-limit history and counters).
    pub fn reconfigure(current: &mut Option<PolicyLoop>, config: &PolicyConfig, state_dir: &Path) {
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
                running.state_dir = state_dir.to_path_buf();
                running.policy.set_config(config.clone());
                tracing::info!(
                    mode = config.mode.as_str(),
                    reassert = config.reassert,
                    "repin policy settings reloaded"
                );
            }
            None => *current = PolicyLoop::new(config, state_dir),
        }
    }

    /// Reconciles interrupted actions, evaluates this tick's view and, in enforce mode, hands
    /// each action to the libvirt worker. A VM with an action on its way is not acted on
    /// again until it is answered.
    pub fn run(&mut self, topology: &Topology, vms: &[Vm], view: &HostView, worker: &mut Worker) {
        self.reconcile_interrupted(topology, vms, worker);
        self.sweep();
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
            if !act || self.busy(&d.domain) {
                continue;
            }
            let Some(vm) = vms.iter().find(|vm| vm.name == d.domain) else {
                continue;
            };
            if vm.vmm != Vmm::Libvirt && vm.vcpus.iter().any(|t| t.tid == 0) {
                // Threads the scan could not name cannot be pinned.
                if d.new {
                    tracing::info!(domain = %d.domain, vmm = ?vm.vmm, moves = %moves(d), "repin recommended; not acting: the VM's vCPU threads are not known, so they cannot be pinned");
                    self.count(&d.domain, "skipped_unmanaged");
                }
                continue;
            }
            self.policy.record_action(&vm.uuid, now);
            let persistent = self.policy.config().persistent;
            let (vm, decision) = (vm.clone(), d.clone());
            let what = format!("repin domain {}", d.domain);
            let answer = if vm.vmm == Vmm::Libvirt {
                Pending::Libvirt(worker.submit(&what, move |lv| {
                    let result = remediate::lookup(lv, &vm)
                        .map_err(|e| (ActionResult::Failed.as_str(), e.to_string()))
                        .and_then(|domain| {
                            remediate::apply(&domain, &vm, &decision, persistent, now)
                                .map(|_| ())
                                .map_err(apply_error)
                        });
                    Answer::Repin(result)
                }))
            } else {
                let dir = self.state_dir.clone();
                let mut decision = decision;
                // No <emulatorpin> to say where QEMU's other threads were: their "before"
                // (what restore puts back) is the main thread's affinity now.
                if let (Some(e), Some(now)) = (
                    decision.emulator.as_mut(),
                    crate::inventory::thread_affinity(vm.pid),
                ) {
                    e.before = now;
                }
                spawn_process_job(&what, move || {
                    let result = ProcessVm::find(&vm, &dir, Path::new(PROC))
                        .and_then(|process| remediate::apply(&process, &vm, &decision, false, now))
                        .map(|_| ())
                        .map_err(apply_error);
                    Answer::Repin(result)
                })
            };
            self.in_flight.push(InFlight {
                domain: d.domain.clone(),
                what: Job::Repin {
                    moves: moves(d),
                    reason: d.reason.clone(),
                },
                answer,
            });
        }
        self.plan = plan;
    }

    /// Whether an action on `domain` is on its way.
    fn busy(&self, domain: &str) -> bool {
        self.in_flight.iter().any(|f| f.domain == domain)
    }

    /// Sweeps the state files of exited QEMUs (see [`process::Sweeper`]).
    fn sweep(&mut self) {
        let enforce = self.mode == Mode::Enforce;
        self.sweeper.tick(enforce, &self.state_dir);
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
