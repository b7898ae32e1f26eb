//! The all-or-nothing rollback, through a recording double of the domain that fails the
//! calls it is told to and keeps the pins it was given. (The real libvirt path is covered by
//! the root `repin` and `journal` tests.)

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::*;
use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::parse_domain_xml;
use crate::inventory::VcpuThread;
use crate::policy::{EmulatorMove, Trigger, VcpuMove, Verdict};

/// One call the double saw, with the CPU set it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    PinVcpu(u32, String),
    PinEmulator(String),
    ReadPins,
    ReadState,
    WriteState,
}

/// A domain that records every call and fails those whose 1-based number is in `failing`.
#[derive(Default)]
pub(super) struct Recording {
    pub failing: Vec<usize>,
    pub calls: RefCell<Vec<Call>>,
    pub state: RefCell<Option<String>>,
    /// Pins made (vCPU index, None for the emulator); the rest are where the VM says.
    pub pins: RefCell<BTreeMap<Option<u32>, CpuSet>>,
}

impl Recording {
    pub fn failing(calls: &[usize]) -> Recording {
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

    pub fn calls(&self) -> Vec<Call> {
        self.calls.borrow().clone()
    }

    pub fn record(&self) -> Record {
        Record::parse(self.state.borrow().as_deref().unwrap_or("<state/>")).unwrap()
    }
}

impl DomainCalls for Recording {
    fn is_persistent(&self) -> bool {
        false
    }
    fn current_pins(&self, vm: &Vm) -> Result<CurrentPins, CallError> {
        self.call(Call::ReadPins)?;
        let pins = self.pins.borrow();
        let vcpus = vm
            .vcpus
            .iter()
            .map(|t| {
                let now = pins.get(&Some(t.vcpu)).unwrap_or(&t.allowed_cpus);
                (t.vcpu, now.clone())
            })
            .collect();
        let emulator = pins
            .get(&None)
            .cloned()
            .or_else(|| vm.spec.emulator_pin.clone())
            .unwrap_or_else(|| cpus("0-1"));
        Ok(CurrentPins {
            vcpus,
            emulator: Some(emulator),
        })
    }
    fn pin_vcpu(&self, vcpu: u32, to: &CpuSet, _: Scope) -> Result<(), CallError> {
        self.call(Call::PinVcpu(vcpu, to.to_string()))?;
        self.pins.borrow_mut().insert(Some(vcpu), to.clone());
        Ok(())
    }
    fn pin_emulator(&self, to: &CpuSet, _: Scope) -> Result<(), CallError> {
        self.call(Call::PinEmulator(to.to_string()))?;
        self.pins.borrow_mut().insert(None, to.clone());
        Ok(())
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

pub(super) fn cpus(list: &str) -> CpuSet {
    list.parse().unwrap()
}

/// A VM whose two vCPUs may run on 0-1 (both sockets of the fixture's view).
pub(super) fn vm() -> Vm {
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
        threads: Vec::new(),
        gpus: Vec::new(),
        gpu_nodes: vec![1],
        spec: parse_domain_xml(xml).unwrap(),
        vmm: crate::inventory::Vmm::Libvirt,
    }
}

/// Move both vCPUs and the emulator from 0-1 to 1.
pub(super) fn repin() -> VmDecision {
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
pub(super) fn pins(to: &str, order: &[u8]) -> Vec<Call> {
    order
        .iter()
        .map(|i| match i {
            2 => Call::PinEmulator(to.into()),
            v => Call::PinVcpu(u32::from(*v), to.into()),
        })
        .collect()
}

/// The calls of an action before its first pin: the record, the pins now, the intent.
pub(super) fn intent() -> Vec<Call> {
    vec![Call::ReadState, Call::ReadPins, Call::WriteState]
}

#[test]
fn an_applied_repin_records_its_intent_pins_everything_then_marks_it_done() {
    let domain = Recording::default();
    let action = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    let mut expected = intent();
    expected.extend(pins("1", &[0, 1, 2]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(action.result, ActionResult::Applied);
    let record = domain.record();
    assert_eq!(record.uuid.as_deref(), Some("u-1"));
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
    // Calls: 1 read, 2 pins now, 3 intent, 4 vCPU 0, 5 vCPU 1, 6 emulator (fails), 7 pins
    // now (compare-and-set of the rollback), 8-9 back, 10 the failure.
    let domain = Recording::failing(&[6]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    let mut expected = intent();
    expected.extend(pins("1", &[0, 1, 2]));
    expected.push(Call::ReadPins);
    expected.extend(pins("0-1", &[1, 0]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(
        err.to_string(),
        "domain gpu-vm: pin the emulator threads to 1 failed: injected failure of call 6; \
         rolled back: pin vCPU 1 to 0-1, pin vCPU 0 to 0-1"
    );
    // The attempt is on record for other operators, with the pins from before it (read
    // before any pin, so never ones pinsight made).
    let record = domain.record();
    assert_eq!(record.original.unwrap().vcpus[&0], cpus("0-1"));
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
    let domain = Recording::failing(&[4]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    let mut expected = intent();
    expected.extend([Call::PinVcpu(0, "1".into()), Call::WriteState]);
    assert_eq!(domain.calls(), expected);
    assert!(
        err.to_string().ends_with("; nothing had been changed"),
        "{err}"
    );
}

#[test]
fn an_intent_that_cannot_be_recorded_stops_before_any_pin() {
    let domain = Recording::failing(&[3]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    assert_eq!(domain.calls(), intent());
    assert!(
        err.to_string().contains("recording the intent")
            && err.to_string().ends_with("nothing had been changed"),
        "{err}"
    );
    assert_eq!(domain.state.borrow().as_deref(), None, "nothing recorded");
}

#[test]
fn a_done_mark_that_fails_leaves_the_intent_for_reconcile() {
    // Calls: 1 read, 2 pins now, 3 intent, 4-6 pins, 7 the done mark (fails).
    let domain = Recording::failing(&[7]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    assert!(matches!(err, RemediateError::Unmarked { .. }), "{err}");
    assert!(
        err.to_string().contains("reconciled at the next rescan"),
        "{err}"
    );
    let record = domain.record();
    let last = record.in_progress().expect("the intent stays recorded");
    assert_eq!(last.vcpus[&0], (cpus("0-1"), cpus("1")));
    assert_eq!(record.original.unwrap().vcpus[&1], cpus("0-1"));
}

#[test]
fn a_pin_that_cannot_be_put_back_is_named_with_the_ones_that_were() {
    // Calls: 1-3 before, 4 vCPU 0, 5 vCPU 1, 6 emulator (fails), 7 pins now, 8 vCPU 1
    // back, 9 vCPU 0 back (fails).
    let domain = Recording::failing(&[6, 9]);
    let err = apply(&domain, &vm(), &repin(), false, 1000.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.ends_with(
            "; rolled back: pin vCPU 1 to 0-1; \
             NOT rolled back: pin vCPU 0 to 0-1 (injected failure of call 9)"
        ),
        "{err}"
    );
}

/// The VM as pinsight's repin left it.
pub(super) fn moved() -> Vm {
    let mut moved = vm();
    for t in &mut moved.vcpus {
        t.allowed_cpus = cpus("1");
    }
    moved.spec.emulator_pin = Some(cpus("1"));
    moved
}

#[test]
fn restore_puts_back_the_original_pins_and_forgets_them() {
    let domain = Recording::default();
    apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    domain.calls.borrow_mut().clear();
    let action = restore(&domain, &moved(), false, 2000.0).unwrap();
    let mut expected = vec![
        Call::ReadState,
        Call::ReadPins,
        Call::ReadPins,
        Call::WriteState,
    ];
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
    let again = restore(&domain, &moved(), false, 3000.0).unwrap_err();
    assert!(
        matches!(again, RemediateError::NothingToRestore { .. }),
        "{again}"
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
