//! The libvirt domain calls remediation makes, behind a small trait so that the
//! all-or-nothing logic can be tested with a double that fails on cue (failures that the real
//! libvirtd cannot be made to produce at a chosen step). [`Domain`] is the real one; the root
//! `repin` tests drive it against libvirtd and QEMU.

use std::collections::BTreeMap;

use virt::domain::Domain;
use virt::error::ErrorNumber;
use virt::sys;

use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::PINSIGHT_STATE_NS;
use crate::inventory::{thread_affinity, Libvirt, Vm};

/// Prefix libvirt gives pinsight's state element.
const STATE_KEY: &str = "pinsight";

/// Which definitions a change goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The running domain only.
    Live,
    /// The running domain and its persistent definition (survives a restart).
    LiveAndConfig,
}

/// A domain call failed; libvirt's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CallError {
    /// libvirt's message (it names the domain's state or the refused value).
    pub message: String,
}

/// Where a VM's threads may run right now, read just before pins are written (the
/// compare-and-set of every change).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentPins {
    /// Allowed CPUs per vCPU index.
    pub vcpus: BTreeMap<u32, CpuSet>,
    /// Allowed CPUs of the emulator threads (QEMU's main thread).
    pub emulator: Option<CpuSet>,
}

/// The domain calls `remediate` makes.
pub trait DomainCalls {
    /// Where `vm`'s vCPU threads and emulator may run now: the same source the policy
    /// decided from (each thread's affinity, which `virDomainPinVcpuFlags` and
    /// `virDomainPinEmulator` set), read fresh.
    fn current_pins(&self, vm: &Vm) -> Result<CurrentPins, CallError>;
    /// Whether the domain has a persistent definition (a transient one refuses CONFIG).
    fn is_persistent(&self) -> bool;
    /// Pins vCPU `vcpu` to `cpus` (`virDomainPinVcpuFlags`).
    fn pin_vcpu(&self, vcpu: u32, cpus: &CpuSet, scope: Scope) -> Result<(), CallError>;
    /// Pins the emulator threads to `cpus` (`virDomainPinEmulator`).
    fn pin_emulator(&self, cpus: &CpuSet, scope: Scope) -> Result<(), CallError>;
    /// pinsight's state element as the live domain has it; `None` when there is none.
    fn read_state(&self) -> Result<Option<String>, CallError>;
    /// Replaces pinsight's state element with `xml` (`virDomainSetMetadata`).
    fn write_state(&self, xml: &str, scope: Scope) -> Result<(), CallError>;
}

/// The running domain of `vm`'s UUID: a VM re-created under the same name is another
/// domain, and pinsight acts only on the one it read.
pub fn lookup(libvirt: &mut Libvirt, vm: &Vm) -> Result<Domain, super::RemediateError> {
    let uri = libvirt.uri().to_string();
    let failed = |message: String| super::RemediateError::Lookup {
        domain: vm.name.clone(),
        uuid: vm.uuid.clone(),
        uri: uri.clone(),
        message,
    };
    let conn = libvirt.connection().map_err(|e| failed(e.to_string()))?;
    conn.lookup_domain_by_uuid_string(&vm.uuid)
        .map_err(|e| failed(e.message().to_string()))
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

fn flags(scope: Scope) -> u32 {
    match scope {
        Scope::Live => sys::VIR_DOMAIN_AFFECT_LIVE,
        Scope::LiveAndConfig => sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG,
    }
}

fn call_error(e: virt::error::Error) -> CallError {
    CallError {
        message: e.message().to_string(),
    }
}

/// The pins a VM's threads have now, from their CPU affinity: each vCPU thread's, and QEMU's
/// main thread's for the emulator.
pub(super) fn pins_from_proc(vm: &Vm) -> Result<CurrentPins, CallError> {
    let gone = |what: String| CallError {
        message: format!("cannot read the CPU affinity of {what}: the thread is gone"),
    };
    let mut pins = CurrentPins::default();
    for t in &vm.vcpus {
        let cpus = thread_affinity(t.tid)
            .ok_or_else(|| gone(format!("vCPU {} (thread {})", t.vcpu, t.tid)))?;
        pins.vcpus.insert(t.vcpu, cpus);
    }
    pins.emulator = Some(
        thread_affinity(vm.pid)
            .ok_or_else(|| gone(format!("QEMU's main thread (pid {})", vm.pid)))?,
    );
    Ok(pins)
}

impl DomainCalls for Domain {
    fn current_pins(&self, vm: &Vm) -> Result<CurrentPins, CallError> {
        crate::inventory::worker::heartbeat("read the current pins");
        // libvirt pins the emulator through the affinity of QEMU's main thread (and the
        // emulator cgroup), so that thread says where the emulator may run.
        pins_from_proc(vm)
    }

    fn is_persistent(&self) -> bool {
        Domain::is_persistent(self).unwrap_or(false)
    }

    fn pin_vcpu(&self, vcpu: u32, cpus: &CpuSet, scope: Scope) -> Result<(), CallError> {
        crate::inventory::worker::heartbeat(&format!("pin vCPU {vcpu} to {cpus}"));
        self.pin_vcpu_flags(vcpu, &cpumap(cpus), flags(scope))
            .map_err(call_error)
    }

    fn pin_emulator(&self, cpus: &CpuSet, scope: Scope) -> Result<(), CallError> {
        crate::inventory::worker::heartbeat(&format!("pin the emulator threads to {cpus}"));
        Domain::pin_emulator(self, &cpumap(cpus), flags(scope)).map_err(call_error)
    }

    fn read_state(&self) -> Result<Option<String>, CallError> {
        crate::inventory::worker::heartbeat("read the state element");
        match self.metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(PINSIGHT_STATE_NS),
            sys::VIR_DOMAIN_AFFECT_LIVE,
        ) {
            Ok(xml) => Ok(Some(xml)),
            Err(e) if e.code().is(ErrorNumber::NoDomainMetadata) => Ok(None),
            Err(e) => Err(call_error(e)),
        }
    }

    fn write_state(&self, xml: &str, scope: Scope) -> Result<(), CallError> {
        crate::inventory::worker::heartbeat("write the state element");
        self.set_metadata(
            sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
            Some(xml),
            Some(STATE_KEY),
            Some(PINSIGHT_STATE_NS),
            flags(scope),
        )
        .map_err(call_error)
    }
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
