//! The journal and its reconcile, through the recording double of `tests`: an action cut
//! short between two pins is completed or rolled back from its record alone, never over a
//! change someone else made, and a record of another UUID is not trusted.

use std::collections::BTreeMap;

use super::tests::{cpus, moved, pins, repin, vm, Call, Recording};
use super::*;
use crate::config::PolicyConfig;
use crate::test_support::topo;
use crate::topology::Topology;

/// The record a repin leaves when the process dies after its first pin call: the intent,
/// and vCPU 0 (only) moved.
fn interrupted() -> Recording {
    let moves = |b: &str, a: &str| (cpus(b), cpus(a));
    let record = Record {
        uuid: Some("u-1".into()),
        original: Some(Pins {
            time: 1000.0,
            vcpus: BTreeMap::from([(0, cpus("0-1")), (1, cpus("0-1"))]),
            emulator: Some(cpus("0-1")),
        }),
        last: Some(Action {
            time: 1000.0,
            action: ActionKind::Repin,
            result: ActionResult::InProgress,
            reason: "may run on the far socket".into(),
            vcpus: BTreeMap::from([(0, moves("0-1", "1")), (1, moves("0-1", "1"))]),
            emulator: Some(moves("0-1", "1")),
        }),
    };
    let at_kill = Recording::default();
    *at_kill.state.borrow_mut() = Some(record.to_xml());
    at_kill.pins.borrow_mut().insert(Some(0), cpus("1"));
    at_kill
}

fn two_socket() -> Topology {
    topo("two-socket-gpu")
}

#[test]
fn an_interrupted_repin_whose_targets_are_valid_is_completed() {
    let domain = interrupted();
    let done = reconcile(
        &domain,
        &vm(),
        &two_socket(),
        &PolicyConfig::default(),
        2000.0,
    )
    .unwrap();
    let Reconciled::Completed(action) = done else {
        panic!("{done:?}")
    };
    // Only what was missing is pinned: vCPU 1 and the emulator, then the record.
    let mut expected = vec![Call::ReadState, Call::ReadPins];
    expected.extend(pins("1", &[1, 2]));
    expected.push(Call::WriteState);
    assert_eq!(domain.calls(), expected);
    assert_eq!(action.result, ActionResult::Applied);
    assert!(
        action.reason.contains("interrupted after 1 of 3 pins")
            && action.reason.contains("completed by reconcile"),
        "{}",
        action.reason
    );
    let record = domain.record();
    assert_eq!(record.last, Some(action));
    assert_eq!(
        record.original.unwrap().vcpus,
        BTreeMap::from([(0, cpus("0-1")), (1, cpus("0-1"))]),
        "the pins from before pinsight ever acted, not the half-moved ones"
    );
    // Nothing left to do.
    let again = reconcile(
        &domain,
        &vm(),
        &two_socket(),
        &PolicyConfig::default(),
        2001.0,
    );
    assert_eq!(again.unwrap(), Reconciled::Nothing);
}

#[test]
fn an_interrupted_repin_onto_cpus_now_reserved_is_rolled_back() {
    let domain = interrupted();
    let config = PolicyConfig {
        reserved_cpus: cpus("1"),
        ..PolicyConfig::default()
    };
    let done = reconcile(&domain, &vm(), &two_socket(), &config, 2000.0).unwrap();
    let Reconciled::RolledBack(action) = done else {
        panic!("{done:?}")
    };
    // Only vCPU 0 had moved: it alone goes back.
    assert_eq!(
        domain.calls(),
        [
            Call::ReadState,
            Call::ReadPins,
            Call::PinVcpu(0, "0-1".into()),
            Call::WriteState
        ]
    );
    assert_eq!(action.result, ActionResult::RolledBack);
    assert!(
        action.reason.contains("CPUs 1 are now reserved"),
        "{}",
        action.reason
    );
    assert_eq!(domain.record().in_progress(), None);
}

#[test]
fn reconcile_writes_nothing_over_a_pin_someone_else_changed() {
    let domain = interrupted();
    domain.pins.borrow_mut().insert(Some(1), cpus("0"));
    let err = reconcile(
        &domain,
        &vm(),
        &two_socket(),
        &PolicyConfig::default(),
        2000.0,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "domain gpu-vm: vCPU 1: now on CPUs 0, not 0-1 (before) or 1 (planned) as when the \
         change was decided: someone else changed it, so pinsight writes nothing over it"
    );
    assert_eq!(domain.calls(), [Call::ReadState, Call::ReadPins]);
    assert!(domain.record().in_progress().is_some(), "still on record");
}

#[test]
fn a_repin_is_not_written_over_a_change_made_after_the_decision() {
    let domain = Recording::default();
    domain.pins.borrow_mut().insert(Some(1), cpus("0"));
    let err = apply(&domain, &vm(), &repin(), false, 1000.0).unwrap_err();
    assert!(matches!(err, RemediateError::Changed { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("domain gpu-vm: vCPU 1: now on CPUs 0, not 0-1"),
        "{err}"
    );
    assert_eq!(domain.calls(), [Call::ReadState, Call::ReadPins]);
    assert_eq!(domain.state.borrow().as_deref(), None);
}

#[test]
fn a_rollback_leaves_alone_a_pin_someone_else_changed_meanwhile() {
    // vCPU 0 was moved by someone else right after pinsight pinned it.
    let rollback = {
        let d = Recording::default();
        d.pins.borrow_mut().insert(Some(0), cpus("0"));
        d.pins.borrow_mut().insert(Some(1), cpus("1"));
        let made = [
            journal::Pin {
                vcpu: Some(0),
                before: cpus("0-1"),
                after: cpus("1"),
            },
            journal::Pin {
                vcpu: Some(1),
                before: cpus("0-1"),
                after: cpus("1"),
            },
        ];
        let r = journal::undo(&d, &vm(), &made, Scope::Live);
        assert_eq!(
            d.calls(),
            [Call::ReadPins, Call::PinVcpu(1, "0-1".into())],
            "vCPU 0 left where the other party put it"
        );
        r
    };
    assert_eq!(rollback.restored, ["pin vCPU 1 to 0-1"]);
    assert!(
        rollback.failed[0].contains("it is now on 0, changed by someone else"),
        "{rollback:?}"
    );
}

#[test]
fn a_record_of_another_uuid_is_not_trusted() {
    let domain = Recording::default();
    apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    let mut other = moved();
    other.uuid = "u-2".into();
    // Restore would put back another VM's pins: refused, naming both UUIDs.
    let err = restore(&domain, &other, false, 2000.0).unwrap_err();
    assert!(
        matches!(err, RemediateError::ForeignRecord { .. })
            && err.to_string().contains("UUID u-1, not this one (u-2)"),
        "{err}"
    );
    // A repin starts a new record, whose original pins are this VM's.
    let mut fresh = vm();
    fresh.uuid = "u-2".into();
    domain.pins.borrow_mut().clear();
    apply(&domain, &fresh, &repin(), false, 3000.0).unwrap();
    let record = domain.record();
    assert_eq!(record.uuid.as_deref(), Some("u-2"));
    assert_eq!(record.original.unwrap().time, 3000.0);
    // And another VM's journal in progress is not reconciled here.
    let half = interrupted();
    let done = reconcile(
        &half,
        &fresh,
        &two_socket(),
        &PolicyConfig::default(),
        4000.0,
    );
    assert_eq!(done.unwrap(), Reconciled::Nothing);
}

#[test]
fn no_new_action_starts_on_a_record_left_in_progress() {
    let domain = interrupted();
    let err = apply(&domain, &vm(), &repin(), false, 2000.0).unwrap_err();
    assert!(matches!(err, RemediateError::InProgress { .. }), "{err}");
    assert_eq!(domain.calls(), [Call::ReadState]);
    // restore still works: it puts back the original pins and ends the journal entry.
    let mut half = vm();
    half.vcpus[0].allowed_cpus = cpus("1");
    let action = restore(&domain, &half, false, 2000.0).unwrap();
    assert_eq!(action.vcpus[&0], (cpus("1"), cpus("0-1")));
    assert_eq!(
        domain.calls()[1..5],
        [
            Call::ReadState,
            Call::ReadPins,
            Call::ReadPins,
            Call::WriteState
        ]
    );
    assert_eq!(domain.record().in_progress(), None);
}

#[test]
fn emulator_threads_without_an_explicit_pin_do_not_block_a_repin() {
    // A host that confines QEMU (machine.slice) to CPU 1: the main thread does not show the
    // policy's "every online CPU", and the VM has no <emulatorpin> to compare with.
    let domain = Recording::default();
    domain.pins.borrow_mut().insert(None, cpus("1"));
    apply(&domain, &vm(), &repin(), false, 1000.0).unwrap();
    // With an explicit <emulatorpin>, a mismatch is someone else's change.
    let domain = Recording::default();
    domain.pins.borrow_mut().insert(None, cpus("1"));
    let mut pinned = vm();
    pinned.spec.emulator_pin = Some(cpus("0-1"));
    let err = apply(&domain, &pinned, &repin(), false, 1000.0).unwrap_err();
    assert!(
        err.to_string()
            .contains("the emulator threads: now on CPUs 1"),
        "{err}"
    );
}
