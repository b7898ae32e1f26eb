//! The all-or-nothing rollback, through a recording double of the domain that fails the
//! calls it is told to. (The real libvirt path is covered by the root `repin` tests.)

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::inventory::domain_xml::parse_domain_xml;
use crate::inventory::VcpuThread;
use crate::policy::{EmulatorMove, Trigger, VcpuMove, Verdict};

/// One call the double saw, with the CPU set it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    PinVcpu(u32, String),
    PinEmulator(String),
    ReadState,
    WriteState,
}

/// A domain that records every call and fails those whose 1-based number is in `failing`.
#[derive(Default)]
struct Recording {
    failing: Vec<usize>,
    calls: RefCell<Vec<Call>>,
    state: RefCell<Option<String>>,
}

impl Recording {
    fn failing(calls: &[usize]) -> Recording {
        Recording {
            failing: calls.to_vec(),
            ..Recording::default()
        }
    }

    fn call(&self, call: Call) -> Result<(), CallError> {
        let mut calls = self.calls.borrow_mut();
        calls.push(call);
        if self.failing.contains(&calls.len()) {
            return Err(CallError {
                message: format!("injected failure of call {}", calls.len()),
            });
        }
        Ok(())
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    fn record(&self) -> Record {
        Record::parse(self.state.borrow().as_deref().unwrap_or("<state/>")).unwrap()
    }
}

impl DomainCalls for Recording {
    fn is_persistent(&self) -> bool {
        false
    }
    fn pin_vcpu(&self, vcpu: u32, cpus: &CpuSet, _: Scope) -> Result<(), CallError> {
        self.call(Call::PinVcpu(vcpu, cpus.to_string()))
    }
    fn pin_emulator(&self, cpus: &CpuSet, _: Scope) -> Result<(), CallError> {
        self.call(Call::PinEmulator(cpus.to_string()))
    }
    fn read_state(&self) -> Result<Option<String>, CallError> {
        self.call(Call::ReadState)?;
        Ok(self.state.borrow().clone())
    }
    fn write_state(&self, xml: &str, _: Scope) -> Result<(), CallError> {
        self.call(Call::WriteState)?;
        *self.state.borrow_mut() = Some(xml.to_string());
        Ok(())
    }
}

fn cpus(list: &str) -> CpuSet {
    list.parse().unwrap()
}

/// A VM whose two vCPUs may run on 0-1 (both sockets of the fixture's view).
fn vm() -> Vm {
    let xml = "<domain type='kvm'><name>gpu-vm</name><uuid>u-1</uuid><vcpu>2</vcpu></domain>";
    Vm {
        name: "gpu-vm".into(),
        uuid: "u-1".into(),
        pid: 1,
        vcpus: (0..2)
            .map(|vcpu| VcpuThread {
                vcpu,
                tid: 100 + vcpu,
                allowed_cpus: cpus("0-1"),
                start_time: 1,
            })
            .collect(),
        gpus: Vec::new(),
        gpu_nodes: vec![1],
        spec: parse_domain_xml(xml).unwrap(),
        vmm: crate::inventory::Vmm::Libvirt,
    }
}

/// Move both vCPUs and the emulator from 0-1 to 1.
fn repin() -> VmDecision {
    let far_cpus = cpus("0");
    VmDecision {
        domain: "gpu-vm".into(),
        gpu_nodes: vec![1],
        verdict: Verdict::Repin,
        reason: "may run on the far socket".into(),
        vcpus: (0..2)
            .map(|vcpu| VcpuMove {
                vcpu,
                before: cpus("0-1"),
                after: Some(cpus("1")),
                trigger: Trigger::AllowedFarSocket {
                    far_cpus: far_cpus.clone(),
                },
            })
            .collect(),
        emulator: Some(EmulatorMove {
            before: cpus("0-1"),
            after: cpus("1"),
        }),
        new: true,
    }
}

/// The three pins of `repin()`, to `to`, in the order given.
fn pins(to: &str, order: &[u8]) -> Vec<Call> {
    order
        .iter()
        .map(|i| match i {
            2 => Call::PinEmulator(to.into()),
            v => Call::PinVcpu(u32::from(*v), to.into()),
        })
        .collect()
}

#[test]
fn an_applied_repin_pins_everything_then_records_it() {
    let domain = Recording::default();
    let action = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    let mut expected = vec![Call::ReadState];
    expected.extend(pins("1", &[0, 1, 2]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(action.result, ActionResult::Applied);
    let record = domain.record();
    let original = record.original.unwrap();
    assert_eq!(
        original.vcpus,
        BTreeMap::from([(0, cpus("0-1")), (1, cpus("0-1"))])
    );
    assert_eq!(original.emulator, Some(cpus("0-1")));
    assert_eq!(record.last, Some(action));
}

#[test]
fn a_failed_pin_puts_back_the_ones_made_in_reverse_and_records_the_failure() {
    // Calls: 1 read, 2 vCPU 0, 3 vCPU 1, 4 emulator (fails).
    let domain = Recording::failing(&[4]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    let mut expected = vec![Call::ReadState];
    expected.extend(pins("1", &[0, 1, 2]));
    expected.extend(pins("0-1", &[1, 0]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(
        err.to_string(),
        "domain gpu-vm: pin the emulator threads to 1 failed: injected failure of call 4; \
         rolled back: pin vCPU 1 to 0-1, pin vCPU 0 to 0-1"
    );
    // The attempt is on record for other operators; no pins from before are claimed.
    let record = domain.record();
    assert_eq!(record.original, None);
    let last = record.last.unwrap();
    assert_eq!(
        (last.action, last.result),
        (ActionKind::Repin, ActionResult::Failed)
    );
    assert!(
        last.reason.contains("rolled back: pin vCPU 1"),
        "{}",
        last.reason
    );
}

#[test]
fn a_first_pin_that_fails_changed_nothing_and_says_so() {
    let domain = Recording::failing(&[2]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    assert_eq!(
        domain.calls(),
        [
            Call::ReadState,
            Call::PinVcpu(0, "1".into()),
            Call::WriteState
        ]
    );
    assert!(
        err.to_string().ends_with("; nothing had been changed"),
        "{err}"
    );
}

#[test]
fn an_unrecorded_change_is_taken_back_whole() {
    // Calls: 1 read, 2-4 pins, 5 the record (fails), then all three back.
    let domain = Recording::failing(&[5]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    let mut expected = vec![Call::ReadState];
    expected.extend(pins("1", &[0, 1, 2]));
    expected.push(Call::WriteState);
    expected.extend(pins("0-1", &[2, 1, 0]));
    assert_eq!(domain.calls(), expected);
    let err = err.to_string();
    assert!(
        err.contains(
            "writing the urn:pinsight:state:1 metadata failed: injected failure of call 5"
        ) && err.ends_with(
            "rolled back: pin the emulator threads to 0-1, pin vCPU 1 to 0-1, \
                 pin vCPU 0 to 0-1"
        ),
        "{err}"
    );
    assert_eq!(domain.state.borrow().as_deref(), None, "nothing recorded");
}

#[test]
fn a_pin_that_cannot_be_put_back_is_named_with_the_ones_that_were() {
    // Calls: 1 read, 2 vCPU 0, 3 vCPU 1, 4 emulator (fails), 5 vCPU 1 back, 6 vCPU 0 back
    // (fails).
    let domain = Recording::failing(&[4, 6]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "; rolled back: pin vCPU 1 to 0-1; \
             NOT rolled back: pin vCPU 0 to 0-1 (injected failure of call 6)"
        ),
        "{err}"
    );
}

#[test]
fn restore_puts_back_the_original_pins_and_forgets_them() {
    let domain = Recording::default();
    apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    let mut moved = vm();
    for t in &mut moved.vcpus {
        t.allowed_cpus = cpus("1");
    }
    moved.spec.emulator_pin = Some(cpus("1"));
    domain.calls.borrow_mut().clear();
    let action = restore(&domain, &moved, false, 2000.0).unwrap();
    let mut expected = vec![Call::ReadState];
    expected.extend(pins("0-1", &[0, 1, 2]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(
        (action.action, action.result),
        (ActionKind::Restore, ActionResult::Applied)
    );
    assert_eq!(action.vcpus[&0], (cpus("1"), cpus("0-1")));
    let record = domain.record();
    assert_eq!((record.original, record.last), (None, Some(action)));
    let again = restore(&domain, &moved, false, 3000.0).unwrap_err();
    assert!(
        matches!(again, RemediateError::NothingToRestore { .. }),
        "{again}"
    );
}

#[test]
fn a_restore_that_cannot_be_recorded_is_taken_back() {
    let domain = Recording::default();
    apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    let recorded = domain.state.borrow().clone();
    let mut moved = vm();
    for t in &mut moved.vcpus {
        t.allowed_cpus = cpus("1");
    }
    moved.spec.emulator_pin = Some(cpus("1"));
    // A fresh domain holding that record. Calls: 1 read, 2-4 pins back to 0-1, 5 the record
    // (fails), then the three pins taken back.
    let domain = Recording::failing(&[5]);
    *domain.state.borrow_mut() = recorded.clone();
    let err = restore(&domain, &moved, false, 2000.0)
        .unwrap_err()
        .to_string();
    assert_eq!(domain.calls()[5..], pins("1", &[2, 1, 0]));
    assert!(
        err.ends_with(
            "rolled back: pin the emulator threads to 1, pin vCPU 1 to 1, pin vCPU 0 to 1"
        ),
        "{err}"
    );
    assert_eq!(
        *domain.state.borrow(),
        recorded,
        "the record still holds the original pins"
    );
}

#[test]
fn an_unreadable_record_stops_before_any_pin() {
    let domain = Recording::default();
    *domain.state.borrow_mut() = Some("<state".into());
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    assert!(matches!(err, RemediateError::Record { .. }), "{err}");
    assert_eq!(domain.calls(), [Call::ReadState]);
}
