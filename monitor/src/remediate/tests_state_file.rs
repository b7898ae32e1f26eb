//! The state file of VMs without libvirt: round trip, atomic replacement, and files that are
//! corrupt or hostile (each an error naming the file).

use std::collections::BTreeMap;

use super::state_file::{self, StateFile, StateFileError, MAX_BYTES};
use crate::policy::record::{Action, ActionKind, ActionResult, Pins, Record};

fn sample() -> StateFile {
    let cpus = |s: &str| s.parse().unwrap();
    StateFile {
        format: state_file::FORMAT,
        vm: "vm-a".into(),
        pid: 4242,
        start_time: 987_654,
        record: Record {
            uuid: Some("b2c1a6e0-0000-4000-8000-000000000001".into()),
            original: Some(Pins {
                time: 1_764_000_000.5,
                vcpus: BTreeMap::from([(0, cpus("0")), (1, cpus("0-1"))]),
                emulator: Some(cpus("0")),
            }),
            last: Some(Action {
                time: 1_764_000_001.25,
                action: ActionKind::Repin,
                result: ActionResult::InProgress,
                reason: "remote share 0.97".into(),
                vcpus: BTreeMap::from([(0, (cpus("0"), cpus("1")))]),
                emulator: Some((cpus("0"), cpus("1"))),
            }),
        },
    }
}

#[test]
fn a_record_written_reads_back_the_same_and_no_temporary_file_is_left() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("qmp-x.json");
    assert!(state_file::read(&path).unwrap().is_none());
    let mut file = sample();
    state_file::write(&path, &file).unwrap();
    assert_eq!(state_file::read(&path).unwrap(), Some(file.clone()));
    // Replaced whole by the next write (rename over it), never appended to.
    file.record.last.as_mut().unwrap().result = ActionResult::Applied;
    state_file::write(&path, &file).unwrap();
    assert_eq!(state_file::read(&path).unwrap(), Some(file));
    let names: Vec<String> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["qmp-x.json".to_string()]);
    state_file::remove(&path).unwrap();
    state_file::remove(&path).unwrap();
    assert!(state_file::read(&path).unwrap().is_none());
}

#[test]
fn corrupt_huge_or_out_of_range_files_are_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp-bad.json");
    let named = |e: StateFileError| {
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        text
    };
    std::fs::write(&path, "{\"format\": 1, not json").unwrap();
    let e = named(state_file::read(&path).unwrap_err());
    assert!(e.contains("not a pinsight record"), "{e}");

    let mut text = serde_json::to_string(&sample()).unwrap();
    text = text.replace("\"format\":1", "\"format\":7");
    std::fs::write(&path, &text).unwrap();
    let e = named(state_file::read(&path).unwrap_err());
    assert!(e.contains("format 7"), "{e}");

    let text = serde_json::to_string(&sample())
        .unwrap()
        .replace("\"0-1\"", "\"0-2000\"");
    std::fs::write(&path, &text).unwrap();
    let e = named(state_file::read(&path).unwrap_err());
    assert!(e.contains("beyond"), "{e}");

    std::fs::write(&path, vec![b' '; MAX_BYTES as usize + 1]).unwrap();
    let e = named(state_file::read(&path).unwrap_err());
    assert!(e.contains("more than the 65536"), "{e}");

    // A symlink is not followed (somebody else's file is not read as a record).
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &path).unwrap();
    named(state_file::read(&path).unwrap_err());
}

#[test]
fn keys_are_the_uuid_or_name_pid_and_start_and_never_leave_the_directory() {
    assert_eq!(
        state_file::key("vm", "ABCD-ef", 1, 2),
        "abcd-ef",
        "the UUID, lower case"
    );
    assert_eq!(
        state_file::key("../../etc/x", "", 7, 99),
        "______etc_x-7-99"
    );
}

#[test]
fn the_sweep_removes_records_of_processes_that_are_gone_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    let start = state_file::process_start(std::path::Path::new("/proc"), me).unwrap();
    let live = StateFile {
        pid: me,
        start_time: start,
        ..sample()
    };
    let stale = StateFile {
        pid: me,
        start_time: start + 1,
        ..sample()
    };
    state_file::write(&dir.path().join("qmp-live.json"), &live).unwrap();
    state_file::write(&dir.path().join("qmp-stale.json"), &stale).unwrap();
    std::fs::write(dir.path().join("qmp-junk.json"), "junk").unwrap();
    let (removed, problems) = state_file::sweep(dir.path(), std::path::Path::new("/proc"));
    assert_eq!(removed, vec![dir.path().join("qmp-stale.json")]);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(dir.path().join("qmp-live.json").exists());
}
