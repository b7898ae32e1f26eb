//! An action pinsight left in progress (it was killed between its intent and its "done"
//! mark): completed when its targets are still valid, else rolled back to "before". Either
//! way each thread is moved only from one of the two sets the record names: a thread found
//! anywhere else was moved by someone else, and nothing is written over it.

use super::journal::{self, action_of, pin_all, Pin};
use super::{read_record, scope, DomainCalls, RemediateError};
use crate::config::PolicyConfig;
use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::policy::record::{utc, Action, ActionKind, ActionResult};
use crate::topology::Topology;

/// What `reconcile` did.
#[derive(Debug, Clone, PartialEq)]
pub enum Reconciled {
    /// No action was left in progress.
    Nothing,
    /// The planned pins were made (those still missing) and the action marked applied.
    Completed(Action),
    /// The targets were no longer valid: the pins made were put back, the action marked
    /// rolled back.
    RolledBack(Action),
}

/// Why the planned CPUs of `pins` can no longer be used, if they cannot: each must exist
/// (online, in the topology) and not be reserved.
fn invalid_targets(pins: &[Pin], topology: &Topology, reserved: &CpuSet) -> Option<String> {
    let online: CpuSet = topology.cpus.keys().copied().collect();
    let problems: Vec<String> = pins
        .iter()
        .filter_map(|pin| {
            let missing: CpuSet = pin.after.difference(&online);
            let taken = pin.after.intersection(reserved);
            if pin.after.is_empty() {
                Some(format!("{}: no target CPU", pin.subject()))
            } else if !missing.is_empty() {
                Some(format!("{}: CPUs {missing} are not online", pin.subject()))
            } else if !taken.is_empty() {
                Some(format!(
                    "{}: CPUs {taken} are now reserved (policy.reserved_cpus)",
                    pin.subject()
                ))
            } else {
                None
            }
        })
        .collect();
    (!problems.is_empty()).then(|| problems.join("; "))
}

/// Reconciles `vm` if its record (read live) holds an action left in progress: completes it
/// when every planned CPU is still valid on `topology` under `config`, else rolls it back,
/// and records which. Refuses, naming the vCPU, when a thread is on neither the action's
/// "before" nor its "after".
pub fn reconcile(
    domain: &impl DomainCalls,
    vm: &Vm,
    topology: &Topology,
    config: &PolicyConfig,
    now: f64,
) -> Result<Reconciled, RemediateError> {
    let mut record = match read_record(domain, vm) {
        // Another domain's journal says nothing about this one's pins.
        Err(RemediateError::ForeignRecord { .. }) => return Ok(Reconciled::Nothing),
        other => other?,
    };
    let Some(action) = record.in_progress().cloned() else {
        return Ok(Reconciled::Nothing);
    };
    let mut pins: Vec<Pin> = action
        .vcpus
        .iter()
        .map(|(v, (before, after))| Pin {
            vcpu: Some(*v),
            before: before.clone(),
            after: after.clone(),
        })
        .collect();
    if let Some((before, after)) = &action.emulator {
        pins.push(Pin {
            vcpu: None,
            before: before.clone(),
            after: after.clone(),
        });
    }
    let current = journal::current(domain, vm)?;
    // Which pins were made before the interruption; anything else is someone else's change.
    let mut made = Vec::new();
    let mut pending = Vec::new();
    for pin in &pins {
        match pin.now(&current) {
            Some(now) if *now == pin.after => made.push(pin.clone()),
            Some(now) if *now == pin.before => pending.push(pin.clone()),
            // Emulator threads without an explicit pin: "before" was libvirt's default,
            // which the main thread need not show exactly; still to be made.
            Some(_) if !journal::checked(pin, vm) => pending.push(pin.clone()),
            now => {
                return Err(RemediateError::Changed {
                    domain: vm.name.clone(),
                    what: pin.subject(),
                    now: now.map_or_else(|| "gone".to_string(), ToString::to_string),
                    expected: format!("{} (before) or {} (planned)", pin.before, pin.after),
                })
            }
        }
    }
    let scope = scope(domain, config.persistent);
    let interrupted = format!(
        "interrupted after {} of {} pins ({} planned {})",
        made.len(),
        pins.len(),
        action.action.as_str(),
        utc(action.time)
    );
    // A restore's targets are the VM's own pins from before pinsight: only gone CPUs
    // invalidate them, never the reserve.
    let reserved = match action.action {
        ActionKind::Repin => config.reserved_cpus.clone(),
        ActionKind::Restore => CpuSet::new(),
    };
    let (result, reason) = match invalid_targets(&pins, topology, &reserved) {
        None => {
            pin_all(domain, vm, &pending, scope)?;
            (
                ActionResult::Applied,
                format!(
                    "{}; {interrupted}, completed by reconcile at {}: the targets are still valid",
                    action.reason,
                    utc(now)
                ),
            )
        }
        Some(why) => {
            let back: Vec<Pin> = made.iter().rev().map(Pin::reversed).collect();
            pin_all(domain, vm, &back, scope)?;
            (
                ActionResult::RolledBack,
                format!(
                    "{}; {interrupted}, rolled back to before by reconcile at {}: {why}",
                    action.reason,
                    utc(now)
                ),
            )
        }
    };
    let done = Action {
        result,
        reason,
        ..action_of(action.time, action.action, result, String::new(), &pins)
    };
    if result == ActionResult::Applied && action.action == ActionKind::Restore {
        record.original = None;
    }
    record.uuid = Some(vm.uuid.clone());
    record.last = Some(done.clone());
    journal::write(domain, &vm.name, &record, scope, "the reconciled action").map_err(|e| {
        RemediateError::Unmarked {
            domain: vm.name.clone(),
            message: e.message,
        }
    })?;
    Ok(match result {
        ActionResult::Applied => Reconciled::Completed(done),
        _ => Reconciled::RolledBack(done),
    })
}
