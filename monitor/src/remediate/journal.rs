//! The journal every change goes through: the intent (the pins before and the pins planned)
//! is recorded `in_progress` before the first pin call, the pins are made, and the action is
//! marked done. A process killed in between leaves a record that says what it was doing, so
//! the next start reconciles the VM (see `reconcile`) instead of taking half-moved pins as
//! the VM's own. Each pin is written only over the pins the decision was made from
//! (compare-and-set), and so is each pin put back.

use std::time::Duration;

use super::domain::{CallError, CurrentPins, DomainCalls, Scope};
use super::{RemediateError, Rollback};
use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::PINSIGHT_STATE_NS;
use crate::inventory::Vm;
use crate::policy::record::{Action, ActionKind, ActionResult, Record};

/// Test-only (the unit and the DaemonSet never set it): milliseconds to sleep between two pin
/// calls of one action, with a log line after each call, so a test can kill the daemon with
/// some pins made and others not.
pub const TEST_PAUSE_ENV: &str = "PINSIGHT_TEST_PAUSE_BETWEEN_PINS_MS";

/// One pin to make, with the set it replaces.
#[derive(Debug, Clone)]
pub(super) struct Pin {
    /// vCPU index, or None for the emulator threads.
    pub vcpu: Option<u32>,
    /// Where it may run now (what the change is based on).
    pub before: CpuSet,
    /// Where it goes.
    pub after: CpuSet,
}

impl Pin {
    /// "pin vCPU 0 to 1" / "pin the emulator threads to 1".
    pub fn describe(&self, to: &CpuSet) -> String {
        match self.vcpu {
            Some(v) => format!("pin vCPU {v} to {to}"),
            None => format!("pin the emulator threads to {to}"),
        }
    }

    /// "vCPU 0" / "the emulator threads".
    pub fn subject(&self) -> String {
        match self.vcpu {
            Some(v) => format!("vCPU {v}"),
            None => "the emulator threads".into(),
        }
    }

    /// Where this pin's thread may run according to `current`.
    pub fn now<'a>(&self, current: &'a CurrentPins) -> Option<&'a CpuSet> {
        match self.vcpu {
            Some(v) => current.vcpus.get(&v),
            None => current.emulator.as_ref(),
        }
    }

    /// The same pin the other way round (for putting it back).
    pub fn reversed(&self) -> Pin {
        Pin {
            vcpu: self.vcpu,
            before: self.after.clone(),
            after: self.before.clone(),
        }
    }

    fn set(&self, domain: &impl DomainCalls, to: &CpuSet, scope: Scope) -> Result<(), CallError> {
        match self.vcpu {
            Some(v) => domain.pin_vcpu(v, to, scope),
            None => domain.pin_emulator(to, scope),
        }
    }
}

/// The pins of `vm` now, as an error naming the domain if they cannot be read.
pub(super) fn current(domain: &impl DomainCalls, vm: &Vm) -> Result<CurrentPins, RemediateError> {
    domain
        .current_pins(vm)
        .map_err(|e| RemediateError::Libvirt {
            domain: vm.name.clone(),
            step: "reading the current pins".into(),
            message: e.message,
            rollback: None,
        })
}

/// Whether `pin` takes part in the compare-and-set: every vCPU, and the emulator threads
/// when the domain pins them explicitly (`<emulatorpin>`). Without one, the policy's "before"
/// for them is where libvirt would let them run (the `<vcpu cpuset>` or every online CPU),
/// which QEMU's main thread need not show exactly (a host that confines machine.slice), so
/// comparing would refuse every repin of such a VM.
pub(super) fn checked(pin: &Pin, vm: &Vm) -> bool {
    pin.vcpu.is_some() || vm.spec.emulator_pin.is_some()
}

/// Compare-and-set: refuses, naming the domain and the vCPU, when a pin's thread is no
/// longer where the change was decided from.
pub(super) fn check_unchanged(
    domain: &impl DomainCalls,
    vm: &Vm,
    pins: &[Pin],
) -> Result<CurrentPins, RemediateError> {
    let current = current(domain, vm)?;
    for pin in pins.iter().filter(|p| checked(p, vm)) {
        let now = pin.now(&current);
        if now != Some(&pin.before) {
            return Err(RemediateError::Changed {
                domain: vm.name.clone(),
                what: pin.subject(),
                now: now.map_or_else(|| "gone".to_string(), ToString::to_string),
                expected: pin.before.to_string(),
            });
        }
    }
    Ok(current)
}

/// An action on `pins` in state `result`.
pub(super) fn action_of(
    time: f64,
    action: ActionKind,
    result: ActionResult,
    reason: String,
    pins: &[Pin],
) -> Action {
    Action {
        time,
        action,
        result,
        reason,
        vcpus: pins
            .iter()
            .filter_map(|p| Some((p.vcpu?, (p.before.clone(), p.after.clone()))))
            .collect(),
        emulator: pins
            .iter()
            .find(|p| p.vcpu.is_none())
            .map(|p| (p.before.clone(), p.after.clone())),
    }
}

/// Writes `record` (the whole state element).
pub(super) fn write(
    domain: &impl DomainCalls,
    name: &str,
    record: &Record,
    scope: Scope,
    what: &str,
) -> Result<(), CallError> {
    domain.write_state(&record.to_xml(), scope).map_err(|e| {
        tracing::warn!(domain = %name, error = %e, "writing the {PINSIGHT_STATE_NS} metadata ({what}) failed");
        e
    })
}

/// Records `action` (in progress) in `record`, makes `pins`, and marks it applied, with
/// `done` applied to the record then (a restore forgets the original pins). A failed pin
/// puts back the ones made and records the failure; a failed "done" mark leaves the action
/// recorded in progress, for `reconcile`.
pub(super) fn journaled(
    domain: &impl DomainCalls,
    vm: &Vm,
    mut record: Record,
    mut action: Action,
    pins: &[Pin],
    scope: Scope,
    done: impl FnOnce(&mut Record),
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    action.result = ActionResult::InProgress;
    record.uuid = Some(vm.uuid.clone());
    record.last = Some(action.clone());
    write(domain, name, &record, scope, "the intent").map_err(|e| RemediateError::Libvirt {
        domain: name.to_string(),
        step: format!("recording the intent in the {PINSIGHT_STATE_NS} metadata"),
        message: e.message,
        rollback: Some(Rollback::default()),
    })?;
    if let Err(e) = pin_all(domain, vm, pins, scope) {
        action.result = ActionResult::Failed;
        action.reason = format!("{}; {e}", action.reason);
        record.last = Some(action);
        // Best effort: if this fails too the record stays in progress and is reconciled.
        let _ = write(domain, name, &record, scope, "the failure");
        return Err(e);
    }
    action.result = ActionResult::Applied;
    record.last = Some(action.clone());
    done(&mut record);
    write(domain, name, &record, scope, "done").map_err(|e| RemediateError::Unmarked {
        domain: name.to_string(),
        message: e.message,
    })?;
    Ok(action)
}

/// The test pause between pin calls, if the environment asks for one.
fn test_pause() -> Option<Duration> {
    let ms: u64 = std::env::var(TEST_PAUSE_ENV).ok()?.trim().parse().ok()?;
    Some(Duration::from_millis(ms))
}

/// Makes `pins` in order; on the first failure puts back the ones already made.
pub(super) fn pin_all(
    domain: &impl DomainCalls,
    vm: &Vm,
    pins: &[Pin],
    scope: Scope,
) -> Result<(), RemediateError> {
    let pause = test_pause();
    for (i, pin) in pins.iter().enumerate() {
        if let Err(e) = pin.set(domain, &pin.after, scope) {
            return Err(RemediateError::Libvirt {
                domain: vm.name.clone(),
                step: pin.describe(&pin.after),
                message: e.message,
                rollback: Some(undo(domain, vm, &pins[..i], scope)),
            });
        }
        let step = pin.describe(&pin.after);
        match pause {
            Some(pause) => {
                tracing::info!(domain = %vm.name, step = %step, made = i + 1, of = pins.len(), pause_ms = pause.as_millis() as u64, "pin call made");
                if i + 1 < pins.len() {
                    // A deliberate pause, not a hung libvirt: keep the worker's deadline
                    // from counting it.
                    let until = std::time::Instant::now() + pause;
                    while std::time::Instant::now() < until {
                        crate::inventory::worker::heartbeat("test pause between pin calls");
                        std::thread::sleep(Duration::from_millis(100).min(pause));
                    }
                }
            }
            None => tracing::debug!(domain = %vm.name, step = %step, "pin call made"),
        }
    }
    Ok(())
}

/// Puts `made` back to their `before` sets, last made first, each only if it is still where
/// it was put (compare-and-set), and says how each went.
pub(super) fn undo(domain: &impl DomainCalls, vm: &Vm, made: &[Pin], scope: Scope) -> Rollback {
    let mut rollback = Rollback::default();
    if made.is_empty() {
        return rollback;
    }
    let current = domain.current_pins(vm);
    for pin in made.iter().rev() {
        let step = pin.describe(&pin.before);
        let now = current.as_ref().map(|c| pin.now(c));
        match now {
            Err(e) => rollback
                .failed
                .push(format!("{step} (current pins unreadable: {e})")),
            Ok(now) if now != Some(&pin.after) => rollback.failed.push(format!(
                "{step} (it is now on {}, changed by someone else: left alone)",
                now.map_or_else(|| "nothing".to_string(), ToString::to_string)
            )),
            Ok(_) => match pin.set(domain, &pin.before, scope) {
                Ok(()) => rollback.restored.push(step),
                Err(e) => rollback.failed.push(format!("{step} ({e})")),
            },
        }
    }
    rollback
}
