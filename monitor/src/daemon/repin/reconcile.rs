//! Reconciling actions a previous run left in progress: each VM whose record holds one is
//! completed or rolled back once (retried after a passing failure) in enforce mode, and
//! reported in the other modes.

use std::path::Path;
use std::time::{Duration, Instant};

use super::jobs::{Answer, InFlight, Job};
use super::process::{spawn_process_job, Pending, PROC};
use super::PolicyLoop;
use crate::config::Mode;
use crate::inventory::worker::Worker;
use crate::inventory::{Vm, Vmm};
use crate::policy::record::describe;
use crate::policy::unix_now;
use crate::remediate::{self, ProcessVm, RemediateError};
use crate::topology::Topology;

/// How long a reconcile that failed waits before it is tried again.
const RECONCILE_RETRY: Duration = Duration::from_secs(10);

impl PolicyLoop {
    /// Reconciles every VM whose record (as of the last rescan) holds an action left in
    /// progress: at the first evaluation after the daemon starts and after each rescan that
    /// shows one. Only enforce mode writes; the other modes say what awaits.
    pub(super) fn reconcile_interrupted(
        &mut self,
        topology: &Topology,
        vms: &[Vm],
        worker: &mut Worker,
    ) {
        let live: Vec<(String, String)> = vms
            .iter()
            .filter_map(|vm| Some((vm.uuid.clone(), vm.spec.state.clone()?)))
            .collect();
        self.reconciled.retain(|key, _| live.contains(key));
        for vm in vms {
            let Some(xml) = vm.spec.state.as_deref() else {
                continue;
            };
            let Some(Ok(record)) = &vm.spec.state_record else {
                continue;
            };
            let Some(action) = record.in_progress().filter(|_| record.belongs_to(&vm.uuid)) else {
                continue;
            };
            let key = (vm.uuid.clone(), xml.to_string());
            if self.busy(&vm.name) {
                continue;
            }
            match self.reconciled.get(&key) {
                Some(None) => continue,
                Some(Some(t)) if t.elapsed() < RECONCILE_RETRY => continue,
                _ => {}
            }
            // Not again while this try is on its way (settle records how it ended).
            self.reconciled.insert(key.clone(), Some(Instant::now()));
            if self.mode != Mode::Enforce {
                self.reconciled.insert(key, None);
                tracing::warn!(domain = %vm.name, action = %describe(action), "an action was left in progress by a pinsight that stopped mid-way; enforce mode reconciles it, pinsight restore undoes it");
                continue;
            }
            let (vm_c, topology, config) =
                (vm.clone(), topology.clone(), self.policy.config().clone());
            let what = format!("reconcile domain {}", vm.name);
            let answer = if vm.vmm == Vmm::Libvirt {
                Pending::Libvirt(worker.submit(&what, move |lv| {
                    let started = Instant::now();
                    let result = remediate::lookup(lv, &vm_c)
                        .and_then(|domain| {
                            remediate::reconcile(&domain, &vm_c, &topology, &config, unix_now())
                        })
                        .map_err(|e| (matches!(e, RemediateError::Changed { .. }), e.to_string()));
                    Answer::Reconcile(result, started.elapsed().as_secs_f64())
                }))
            } else {
                let dir = self.state_dir.clone();
                spawn_process_job(&what, move || {
                    let started = Instant::now();
                    let result = ProcessVm::find(&vm_c, &dir, Path::new(PROC))
                        .and_then(|process| {
                            remediate::reconcile(&process, &vm_c, &topology, &config, unix_now())
                        })
                        .map_err(|e| (matches!(e, RemediateError::Changed { .. }), e.to_string()));
                    Answer::Reconcile(result, started.elapsed().as_secs_f64())
                })
            };
            self.in_flight.push(InFlight {
                domain: vm.name.clone(),
                what: Job::Reconcile {
                    uuid: vm.uuid.clone(),
                    key,
                },
                answer,
            });
        }
    }
}
