//! Acts on the policy's decisions through libvirt: live vCPU and emulator pins
//! (`virDomainPinVcpuFlags`, `virDomainPinEmulator`), persistent only when configured, and
//! pinsight's audit record in the domain's `urn:pinsight:state:1` metadata. All or nothing: a
//! change that cannot be completed and recorded is rolled back, so every change pinsight
//! leaves behind can be undone with `pinsight restore`.

use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::PINSIGHT_STATE_NS;
use crate::inventory::Vm;
use crate::policy::record::{utc, Action, Pins, Record};
use crate::policy::VmDecision;

/// Prefix libvirt gives pinsight's state element.
const STATE_KEY: &str = "pinsight";

/// A change that could not be made; names the domain, the step and libvirt's reason.
#[derive(Debug, thiserror::Error)]
pub enum RemediateError {
    /// A libvirt call failed.
    #[error("domain {domain}: {step} failed: {message}{rollback}")]
    Libvirt {
        /// Domain name.
        domain: String,
        /// What was being done ("pin vCPU 0 to 1").
        step: String,
        /// libvirt's message.
        message: String,
        /// "; rolled back" or what could not be rolled back.
        rollback: String,
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

/// libvirt's CPU map: bit `cpu % 8` of byte `cpu / 8`.
pub fn cpumap(cpus: &CpuSet) -> Vec<u8> {
    let len = cpus.iter().last().map_or(1, |max| max as usize / 8 + 1);
    let mut map = vec![0u8; len];
    for cpu in cpus.iter() {
        map[cpu as usize / 8] |= 1 << (cpu % 8);
    }
    map
}

/// The flags of every change: live, plus the persistent definition when asked for and the
/// domain has one (a transient domain refuses CONFIG).
fn flags(domain: &Domain, persistent: bool) -> u32 {
    let mut flags = sys::VIR_DOMAIN_AFFECT_LIVE;
    if persistent && domain.is_persistent().unwrap_or(false) {
        flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
    }
    flags
}

/// pinsight's record of `domain`, read live (an absent element is an empty record).
pub fn read_record(domain: &Domain, name: &str) -> Result<Record, RemediateError> {
    match domain.metadata(
        sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(PINSIGHT_STATE_NS),
        sys::VIR_DOMAIN_AFFECT_LIVE,
    ) {
        Ok(xml) => Record::parse(&xml).map_err(|e| RemediateError::Record {
            domain: name.to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.code().is(ErrorNumber::NoDomainMetadata) => Ok(Record::default()),
        Err(e) => Err(RemediateError::Libvirt {
            domain: name.to_string(),
            step: format!("reading the {PINSIGHT_STATE_NS} metadata"),
            message: e.message().to_string(),
            rollback: String::new(),
        }),
    }
}

fn write_record(
    domain: &Domain,
    name: &str,
    record: &Record,
    flags: u32,
) -> Result<(), RemediateError> {
    domain
        .set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(&record.to_xml()),
            Some(STATE_KEY),
            Some(PINSIGHT_STATE_NS),
            flags,
        )
        .map_err(|e| RemediateError::Libvirt {
            domain: name.to_string(),
            step: format!("writing the {PINSIGHT_STATE_NS} metadata"),
            message: e.message().to_string(),
            rollback: String::new(),
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

    fn set(&self, domain: &Domain, to: &CpuSet, flags: u32) -> Result<(), virt::error::Error> {
        match self.vcpu {
            Some(v) => domain.pin_vcpu_flags(v, &cpumap(to), flags),
            None => domain.pin_emulator(&cpumap(to), flags),
        }
    }
}

/// Makes `pins` in order; on the first failure puts back the ones already made.
/// An applied action that moved `pins` (vCPUs and, if present, the emulator).
fn applied_action(time: f64, action: &str, reason: String, pins: &[Pin]) -> Action {
    Action {
        time,
        action: action.into(),
        result: "applied".into(),
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

fn pin_all(domain: &Domain, name: &str, pins: &[Pin], flags: u32) -> Result<(), RemediateError> {
    for (i, pin) in pins.iter().enumerate() {
        if let Err(e) = pin.set(domain, &pin.after, flags) {
            return Err(RemediateError::Libvirt {
                domain: name.to_string(),
                step: pin.describe(&pin.after),
                message: e.message().to_string(),
                rollback: undo(domain, &pins[..i], flags),
            });
        }
    }
    Ok(())
}

/// Puts `done` back to their `before` sets; says how that went, for the error message.
fn undo(domain: &Domain, done: &[Pin], flags: u32) -> String {
    let failed: Vec<String> = done
        .iter()
        .rev()
        .filter_map(|pin| {
            pin.set(domain, &pin.before, flags)
                .err()
                .map(|e| format!("{}: {}", pin.describe(&pin.before), e.message()))
        })
        .collect();
    match (done.is_empty(), failed.is_empty()) {
        (true, _) => String::new(),
        (false, true) => "; the pins already made were put back".into(),
        (false, false) => format!("; putting back FAILED: {}", failed.join("; ")),
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

/// Applies a Repin decision for `vm` live (and persistently if `persistent`), and records
/// it. Returns the recorded action. On failure nothing is left changed (or the error says
/// what could not be put back).
pub fn apply(
    domain: &Domain,
    vm: &Vm,
    decision: &VmDecision,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    let flags = flags(domain, persistent);
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
    let mut action = applied_action(now, "repin", decision.reason.clone(), &pins);
    if let Err(e) = pin_all(domain, name, &pins, flags) {
        // Nothing changed: record the attempt for other operators (best effort), with the
        // original pins only if an earlier action set them.
        let mut failed = read;
        action.result = "failed".into();
        action.reason = format!("{}; {e}", action.reason);
        failed.last = Some(action);
        let _ = write_record(domain, name, &failed, flags);
        return Err(e);
    }
    record.last = Some(action.clone());
    if let Err(mut e) = write_record(domain, name, &record, flags) {
        // An unrecorded change could not be restored by `pinsight restore`: take it back.
        if let RemediateError::Libvirt { rollback, .. } = &mut e {
            *rollback = undo(domain, &pins, flags);
        }
        return Err(e);
    }
    Ok(action)
}

/// Puts back the pins recorded before pinsight's first action on `vm` and records that.
pub fn restore(
    domain: &Domain,
    vm: &Vm,
    persistent: bool,
    now: f64,
) -> Result<Action, RemediateError> {
    let name = vm.name.as_str();
    let flags = flags(domain, persistent);
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
    pin_all(domain, name, &pins, flags)?;
    let action = applied_action(
        now,
        "restore",
        format!(
            "pinsight restore: the pins from before pinsight's first action ({})",
            utc(original.time)
        ),
        &pins,
    );
    record.last = Some(action.clone());
    if let Err(mut e) = write_record(domain, name, &record, flags) {
        if let RemediateError::Libvirt { rollback, .. } = &mut e {
            *rollback = undo(domain, &pins, flags);
        }
        return Err(e);
    }
    Ok(action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpumap_sets_one_bit_per_cpu() {
        let map = |s: &str| cpumap(&s.parse().unwrap());
        assert_eq!(map("0"), vec![0b0000_0001]);
        assert_eq!(map("1"), vec![0b0000_0010]);
        assert_eq!(map("0-1,7"), vec![0b1000_0011]);
        assert_eq!(map("8,15-16"), vec![0, 0b1000_0001, 0b0000_0001]);
        assert_eq!(map(""), vec![0]);
    }
}
