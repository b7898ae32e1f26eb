//! Acts on the policy's decisions through libvirt: live vCPU and emulator pins
//! (`virDomainPinVcpuFlags`, `virDomainPinEmulator`), persistent only when configured, and
//! pinsight's audit record in the domain's `urn:pinsight:state:1` metadata. Every change is
//! journaled (recorded in progress before the first pin, marked done after the last; see
//! [`journal`]), written only over the pins it was decided from, and an action a crash cut
//! short is completed or rolled back by [`reconcile`], so every change pinsight leaves
//! behind can be undone with `pinsight restore`. Domains are looked up by UUID, and a
//! record written for another UUID is not trusted.
//!
//! A QEMU without libvirt (found through its QMP socket) goes through the same journal,
//! reconcile and restore behind the same [`DomainCalls`]: [`ProcessVm`] pins its threads with
//! sched_setaffinity and keeps the record in a [`state_file`] of its own.
//!
//! The memory and interrupt fixes ([`memory`], [`irq`]) keep their own record
//! ([`fix_record`], one file per VM), which [`fix_restore`] undoes.

mod domain;
pub mod fix_record;
pub mod fix_restore;
pub mod irq;
mod journal;
pub mod memory;
mod process;
mod reconcile;
pub mod state_file;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_journal;
#[cfg(test)]
mod tests_state_file;

use std::fmt;

use crate::inventory::domain_xml::PINSIGHT_STATE_NS;
use crate::inventory::Vm;
use crate::policy::record::{describe, utc, Action, ActionKind, ActionResult, Pins, Record};
use crate::policy::VmDecision;
pub use domain::{cpumap, lookup, CallError, CurrentPins, DomainCalls, Scope};
pub use journal::TEST_PAUSE_ENV;
use journal::{action_of, check_unchanged, journaled, Pin};
pub use process::ProcessVm;
pub use reconcile::{reconcile, Reconciled};

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
    /// The domain of the VM's UUID is not there (or libvirt failed to say).
    #[error("libvirt at {uri}: no running domain of UUID {uuid} ({domain}): {message}")]
    Lookup {
        /// Domain name as last read.
        domain: String,
        /// The UUID looked up.
        uuid: String,
        /// Connection URI.
        uri: String,
        /// libvirt's message.
        message: String,
    },
    /// Compare-and-set refused: a thread is no longer where the change was decided from.
    #[error(
        "domain {domain}: {what}: now on CPUs {now}, not {expected} as when the change was \
         decided: someone else changed it, so pinsight writes nothing over it"
    )]
    Changed {
        /// Domain name.
        domain: String,
        /// "vCPU 0" or "the emulator threads".
        what: String,
        /// Where it may run now ("gone" for a vCPU that no longer exists).
        now: String,
        /// Where the decision saw it.
        expected: String,
    },
    /// Every pin was made but marking the action done failed.
    #[error(
        "domain {domain}: every pin was made, but marking the action done in the \
         {PINSIGHT_STATE_NS} metadata failed: {message}; it stays recorded as in progress and \
         is reconciled at the next rescan"
    )]
    Unmarked {
        /// Domain name.
        domain: String,
        /// libvirt's message.
        message: String,
    },
    /// An action pinsight left in progress must be reconciled before another starts.
    #[error("domain {domain}: an interrupted action is still recorded in progress ({action}); it is reconciled first")]
    InProgress {
        /// Domain name.
        domain: String,
        /// The action, in words.
        action: String,
    },
    /// The record carries another domain's UUID (a domain re-created from a copied XML).
    #[error(
        "domain {domain}: its {PINSIGHT_STATE_NS} metadata was written for the domain of UUID \
         {recorded}, not this one ({uuid}): its pins are not this VM's and are not used"
    )]
    ForeignRecord {
        /// Domain name.
        domain: String,
        /// This domain's UUID.
        uuid: String,
        /// The UUID in the record.
        recorded: String,
    },
    /// The QEMU process of a VM without libvirt is no longer there.
    #[error("VM {domain}: QEMU pid {pid} is gone (it exited since the scan)")]
    Gone {
        /// VM name.
        domain: String,
        /// The pid scanned.
        pid: u32,
    },
    /// The state file of a VM without libvirt could not be read, written or removed.
    #[error(transparent)]
    StateFile(#[from] state_file::StateFileError),
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

/// pinsight's record of `vm`, read live (an absent element is an empty record). A record of
/// another UUID is an error naming both: the caller decides whether to start afresh.
pub fn read_record(domain: &impl DomainCalls, vm: &Vm) -> Result<Record, RemediateError> {
    let name = vm.name.as_str();
    let xml = domain.read_state().map_err(|e| RemediateError::Libvirt {
        domain: name.to_string(),
        step: format!("reading the {PINSIGHT_STATE_NS} metadata"),
        message: e.message,
        rollback: None,
    })?;
    let record = match xml {
        Some(xml) => Record::parse(&xml).map_err(|e| RemediateError::Record {
            domain: name.to_string(),
            reason: e.to_string(),
        })?,
        None => Record::default(),
    };
    match &record.uuid {
        Some(recorded) if !record.belongs_to(&vm.uuid) => Err(RemediateError::ForeignRecord {
            domain: name.to_string(),
            uuid: vm.uuid.clone(),
            recorded: recorded.clone(),
        }),
        _ => Ok(record),
    }
}

/// The record to build a new action on: a foreign one is replaced (this VM is new to
/// pinsight), with a warning.
fn own_record(domain: &impl DomainCalls, vm: &Vm) -> Result<Record, RemediateError> {
    match read_record(domain, vm) {
        Err(e @ RemediateError::ForeignRecord { .. }) => {
            tracing::warn!(domain = %vm.name, error = %e, "starting a new record");
            Ok(Record::default())
        }
        other => other,
    }
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

/// Refuses to start on a record that still holds an interrupted action.
fn not_in_progress(vm: &Vm, record: &Record) -> Result<(), RemediateError> {
    match record.in_progress() {
        Some(action) => Err(RemediateError::InProgress {
            domain: vm.name.clone(),
            action: describe(action),
        }),
        None => Ok(()),
    }
}

/// Applies a Repin decision for `vm` live (and persistently if `persistent`), journaled in
/// its record. Returns the recorded action. Refuses (compare-and-set) when a thread is no
/// longer where the decision saw it. On failure nothing is left changed (or the error says
/// what could not be put back).
pub fn apply(
    domain: &impl DomainCalls,
    vm: &Vm,
    decision: &VmDecision,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let scope = scope(domain, persistent);
    let mut record = own_record(domain, vm)?;
    not_in_progress(vm, &record)?;
    let pins = pins_of(decision);
    let current = check_unchanged(domain, vm, &pins)?;
    // Read before any pin of this action, so never one pinsight made: the pins of every
    // vCPU now, plus the earliest known set of everything this action moves.
    let original = record.original.get_or_insert_with(|| Pins {
        time: now,
        vcpus: current.vcpus.clone(),
        emulator: None,
    });
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
    let action = action_of(
        now,
        ActionKind::Repin,
        ActionResult::InProgress,
        decision.reason.clone(),
        &pins,
    );
    journaled(domain, vm, record, action, &pins, scope, |_| {})
}

/// The pins that put back `original` from where `vm` is now.
fn restoring_pins(vm: &Vm, original: &Pins, current: &CurrentPins) -> Vec<Pin> {
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
        let now = current.emulator.clone().unwrap_or_else(|| cpus.clone());
        pins.push(Pin {
            vcpu: None,
            before: now,
            after: cpus.clone(),
        });
    }
    pins
}

/// Puts back the pins recorded before pinsight's first action on `vm` and records that,
/// journaled like a repin (an interrupted restore is completed at the next start).
pub fn restore(
    domain: &impl DomainCalls,
    vm: &Vm,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    let scope = scope(domain, persistent);
    let record = read_record(domain, vm)?;
    let Some(original) = record.original.clone() else {
        return Err(RemediateError::NothingToRestore {
            domain: name.to_string(),
        });
    };
    let current = journal::current(domain, vm)?;
    let pins = restoring_pins(vm, &original, &current);
    check_unchanged(domain, vm, &pins)?;
    let action = action_of(
        now,
        ActionKind::Restore,
        ActionResult::InProgress,
        format!(
            "pinsight restore: the pins from before pinsight's first action ({})",
            utc(original.time)
        ),
        &pins,
    );
    journaled(domain, vm, record, action, &pins, scope, |r| {
        r.original = None;
    })
}
