//! Acts on the policy's decisions through libvirt: live vCPU and emulator pins
//! (`virDomainPinVcpuFlags`, `virDomainPinEmulator`), persistent only when configured, and
//! pinsight's audit record in the domain's `urn:pinsight:state:1` metadata. All or nothing: a
//! change that cannot be completed and recorded is rolled back, so every change pinsight
//! leaves behind can be undone with `pinsight restore`.

mod domain;
#[cfg(test)]
mod tests;

use std::fmt;

use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::PINSIGHT_STATE_NS;
use crate::inventory::Vm;
use crate::policy::record::{utc, Action, ActionKind, ActionResult, Pins, Record};
use crate::policy::VmDecision;
pub use domain::{cpumap, CallError, DomainCalls, Scope};

/// A change that could not be made; names the domain, the step and libvirt's reason.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    /// A libvirt call failed.
    #[error("domain {domain}: {step} failed: {message}{}", rollback.as_ref().map_or(String::new(), |r| format!("; {r}")))]
    Libvirt {
        /// Domain name.
        domain: String,
        /// What was being done ("pin vCPU 0 to 1").
        step: String,
        /// libvirt's message.
        message: String,
        /// What became of the pins made before the failure; `None` when the step came
        /// before any pin (reading the record).
        rollback: Option<Rollback>,
    },
    /// pinsight's state element is unreadable, so a change could not be undone.
    #[error("domain {domain}: {reason}")]
    Record {
        /// Domain name.
        domain: String,
        /// The parse error.
        reason: String,
    },
    /// `restore` on a domain pinsight has not changed.
    #[error(
        "domain {domain}: nothing to restore: its {PINSIGHT_STATE_NS} metadata records no pins \
         from before a pinsight action"
    )]
    NothingToRestore {
        /// Domain name.
        domain: String,
    },
}

/// What became of the pins already made when a later step failed: each was put back (in
/// reverse order) or could not be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rollback {
    /// The pins put back, in the order they were ("pin vCPU 1 to 0-1").
    pub restored: Vec<String>,
    /// The pins that could not be put back, each with libvirt's message.
    pub failed: Vec<String>,
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.restored.is_empty(), self.failed.is_empty()) {
            (true, true) => write!(f, "nothing had been changed"),
            (false, true) => write!(f, "rolled back: {}", self.restored.join(", ")),
            (true, false) => write!(f, "NOT rolled back: {}", self.failed.join(", ")),
            (false, false) => write!(
                f,
                "rolled back: {}; NOT rolled back: {}",
                self.restored.join(", "),
                self.failed.join(", ")
            ),
        }
    }
}

/// The scope of every change: live, plus the persistent definition when asked for and the
/// domain has one (a transient domain refuses CONFIG).
fn scope(domain: &impl DomainCalls, persistent: bool) -> Scope {
    if persistent && domain.is_persistent() {
        Scope::LiveAndConfig
    } else {
        Scope::Live
    }
}

/// pinsight's record of `domain`, read live (an absent element is an empty record).
pub fn read_record(domain: &impl DomainCalls, name: &str) -> Result<Record, RemediateError> {
    let xml = domain.read_state().map_err(|e| RemediateError::Libvirt {
        domain: name.to_string(),
        step: format!("reading the {PINSIGHT_STATE_NS} metadata"),
        message: e.message,
        rollback: None,
    })?;
    match xml {
        Some(xml) => Record::parse(&xml).map_err(|e| RemediateError::Record {
            domain: name.to_string(),
            reason: e.to_string(),
        }),
        None => Ok(Record::default()),
    }
}

/// Writes `record`; on failure puts back `made` (an unrecorded change could not be undone by
/// `pinsight restore`).
fn write_record(
    domain: &impl DomainCalls,
    name: &str,
    record: &Record,
    scope: Scope,
    made: &[Pin],
) -> Result<(), RemediateError> {
    domain
        .write_state(&record.to_xml(), scope)
        .map_err(|e| RemediateError::Libvirt {
            domain: name.to_string(),
            step: format!("writing the {PINSIGHT_STATE_NS} metadata"),
            message: e.message,
            rollback: Some(undo(domain, made, scope)),
        })
}

/// One pin to make, with the set to go back to.
#[derive(Debug, Clone)]
struct Pin {
    /// vCPU index, or None for the emulator threads.
    vcpu: Option<u32>,
    before: CpuSet,
    after: CpuSet,
}

impl Pin {
    fn describe(&self, to: &CpuSet) -> String {
        match self.vcpu {
            Some(v) => format!("pin vCPU {v} to {to}"),
            None => format!("pin the emulator threads to {to}"),
        }
    }

    fn set(&self, domain: &impl DomainCalls, to: &CpuSet, scope: Scope) -> Result<(), CallError> {
        match self.vcpu {
            Some(v) => domain.pin_vcpu(v, to, scope),
            None => domain.pin_emulator(to, scope),
        }
    }
}

/// An applied action that moved `pins` (vCPUs and, if present, the emulator).
fn applied_action(time: f64, action: ActionKind, reason: String, pins: &[Pin]) -> Action {
    Action {
        time,
        action,
        result: ActionResult::Applied,
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

/// Makes `pins` in order; on the first failure puts back the ones already made.
fn pin_all(
    domain: &impl DomainCalls,
    name: &str,
    pins: &[Pin],
    scope: Scope,
) -> Result<(), RemediateError> {
    for (i, pin) in pins.iter().enumerate() {
        if let Err(e) = pin.set(domain, &pin.after, scope) {
            return Err(RemediateError::Libvirt {
                domain: name.to_string(),
                step: pin.describe(&pin.after),
                message: e.message,
                rollback: Some(undo(domain, &pins[..i], scope)),
            });
        }
    }
    Ok(())
}

/// Puts `made` back to their `before` sets, last made first, and says how each went.
fn undo(domain: &impl DomainCalls, made: &[Pin], scope: Scope) -> Rollback {
    let mut rollback = Rollback::default();
    for pin in made.iter().rev() {
        let step = pin.describe(&pin.before);
        match pin.set(domain, &pin.before, scope) {
            Ok(()) => rollback.restored.push(step),
            Err(e) => rollback.failed.push(format!("{step} ({e})")),
        }
    }
    rollback
}

/// The pins a Repin decision makes.
fn pins_of(decision: &VmDecision) -> Vec<Pin> {
    let mut pins: Vec<Pin> = decision
        .vcpus
        .iter()
        .filter_map(|m| {
            Some(Pin {
                vcpu: Some(m.vcpu),
                before: m.before.clone(),
                after: m.after.clone()?,
            })
        })
        .collect();
    if let Some(e) = &decision.emulator {
        pins.push(Pin {
            vcpu: None,
            before: e.before.clone(),
            after: e.after.clone(),
        });
    }
    pins
}

/// Applies a Repin decision for `vm` live (and persistently if `persistent`), and records
/// it. Returns the recorded action. On failure nothing is left changed (or the error says
/// what could not be put back).
pub fn apply(
    domain: &impl DomainCalls,
    vm: &Vm,
    decision: &VmDecision,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    let scope = scope(domain, persistent);
    let read = read_record(domain, name)?;
    let mut record = read.clone();
    let pins = pins_of(decision);
    let original = record.original.get_or_insert_with(|| Pins {
        time: now,
        vcpus: vm
            .vcpus
            .iter()
            .map(|t| (t.vcpu, t.allowed_cpus.clone()))
            .collect(),
        emulator: None,
    });
    // Keep the earliest known set of everything this action moves.
    for pin in &pins {
        match pin.vcpu {
            Some(v) => {
                original
                    .vcpus
                    .entry(v)
                    .or_insert_with(|| pin.before.clone());
            }
            None => {
                original.emulator.get_or_insert_with(|| pin.before.clone());
            }
        }
    }
    let mut action = applied_action(now, ActionKind::Repin, decision.reason.clone(), &pins);
    if let Err(e) = pin_all(domain, name, &pins, scope) {
        // Nothing changed: record the attempt for other operators (best effort), with the
        // original pins only if an earlier action set them.
        let mut failed = read;
        action.result = ActionResult::Failed;
        action.reason = format!("{}; {e}", action.reason);
        failed.last = Some(action);
        let _ = domain.write_state(&failed.to_xml(), scope);
        return Err(e);
    }
    record.last = Some(action.clone());
    write_record(domain, name, &record, scope, &pins)?;
    Ok(action)
}

/// Puts back the pins recorded before pinsight's first action on `vm` and records that.
pub fn restore(
    domain: &impl DomainCalls,
    vm: &Vm,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    let scope = scope(domain, persistent);
    let mut record = read_record(domain, name)?;
    let original = record
        .original
        .take()
        .ok_or_else(|| RemediateError::NothingToRestore {
            domain: name.to_string(),
        })?;
    let mut pins: Vec<Pin> = original
        .vcpus
        .iter()
        .filter_map(|(v, cpus)| {
            let now = vm.vcpus.iter().find(|t| t.vcpu == *v)?;
            Some(Pin {
                vcpu: Some(*v),
                before: now.allowed_cpus.clone(),
                after: cpus.clone(),
            })
        })
        .collect();
    if let Some(cpus) = &original.emulator {
        let current = vm
            .spec
            .emulator_pin
            .clone()
            .or_else(|| vm.spec.vcpu_cpuset.clone())
            .unwrap_or_else(|| cpus.clone());
        pins.push(Pin {
            vcpu: None,
            before: current,
            after: cpus.clone(),
        });
    }
    pin_all(domain, name, &pins, scope)?;
    let action = applied_action(
        now,
        ActionKind::Restore,
        format!(
            "pinsight restore: the pins from before pinsight's first action ({})",
            utc(original.time)
        ),
        &pins,
    );
    record.last = Some(action.clone());
    write_record(domain, name, &record, scope, &pins)?;
    Ok(action)
}
