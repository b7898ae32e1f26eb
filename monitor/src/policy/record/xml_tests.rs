//! The state element's XML form: round trips through libvirt's prefixed form, the journal
//! states, older records, bad values named.

use super::super::describe;
use super::*;

fn cpus(list: &str) -> CpuSet {
    list.parse().unwrap()
}

/// What libvirt stores after `set_metadata(key = "pinsight")`: every element prefixed.
fn as_libvirt_stores_it(written: &str) -> String {
    written
        .replace(
            "<state",
            "<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\"",
        )
        .replace("</", "</pinsight:")
        .replace("<original", "<pinsight:original")
        .replace("<last", "<pinsight:last")
        .replace("<vcpu", "<pinsight:vcpu")
        .replace("<emulator", "<pinsight:emulator")
}

#[test]
fn round_trips_through_libvirts_prefixed_form() {
    let record = Record {
        uuid: Some("8f0c2a7e-0000-4000-8000-000000000001".into()),
        original: Some(Pins {
            time: 1_764_055_200.5,
            vcpus: BTreeMap::from([(0, cpus("0")), (1, cpus("0-1"))]),
            emulator: Some(cpus("0-1")),
        }),
        last: Some(Action {
            time: 1_764_055_201.25,
            action: ActionKind::Repin,
            result: ActionResult::Applied,
            reason: "vCPU 0 remote share 0.97 >= 0.50 & \"more\"".into(),
            vcpus: BTreeMap::from([(0, (cpus("0"), cpus("1")))]),
            emulator: Some((cpus("0-1"), cpus("1"))),
        }),
    };
    let xml = record.to_xml();
    assert!(
        xml.contains("utc=\"2025-11-25T07:20:00Z\""),
        "human-readable time: {xml}"
    );
    let stored = as_libvirt_stores_it(&xml);
    assert_eq!(Record::parse(&stored).unwrap(), record, "{stored}");
    // virDomainGetMetadata hands the element back without any namespace.
    assert_eq!(Record::parse(&xml).unwrap(), record, "{xml}");
    assert_eq!(
        record.pinned_by_pinsight(),
        BTreeMap::from([(0, cpus("1"))])
    );
    assert_eq!(
        describe(record.last.as_ref().unwrap()),
        "2025-11-25T07:20:01Z repin applied: vCPU 0 0 -> 1, emulator 0-1 -> 1 \
         (vCPU 0 remote share 0.97 >= 0.50 & \"more\")"
    );
}

#[test]
fn a_journal_entry_in_progress_round_trips_and_is_told_apart() {
    let mut record = Record {
        uuid: Some("u-1".into()),
        last: Some(Action {
            time: 10.0,
            action: ActionKind::Repin,
            result: ActionResult::InProgress,
            reason: "planned".into(),
            vcpus: BTreeMap::from([(0, (cpus("0"), cpus("1"))), (1, (cpus("0"), cpus("1")))]),
            emulator: None,
        }),
        ..Record::default()
    };
    let xml = record.to_xml();
    assert!(
        xml.starts_with("<state uuid=\"u-1\">")
            && xml.contains("state=\"in_progress\"")
            && !xml.contains("result="),
        "{xml}"
    );
    let parsed = Record::parse(&as_libvirt_stores_it(&xml)).unwrap();
    assert_eq!(parsed, record);
    assert!(parsed.in_progress().is_some() && parsed.belongs_to("U-1"));
    assert!(!parsed.belongs_to("u-2"), "another domain's record");
    assert!(
        Record::default().belongs_to("u-2"),
        "an older record names no UUID"
    );
    assert_eq!(
        parsed.last.unwrap().left_pins(),
        None,
        "half moved: unknown"
    );
    for (result, pins) in [
        (ActionResult::Applied, "1"),
        (ActionResult::RolledBack, "0"),
    ] {
        let last = record.last.as_mut().unwrap();
        last.result = result;
        let xml = record.to_xml();
        assert!(
            xml.contains(&format!("state=\"done\" result=\"{}\"", result.as_str())),
            "{xml}"
        );
        let parsed = Record::parse(&xml).unwrap();
        assert!(parsed.in_progress().is_none());
        let (left, _) = parsed.last.unwrap().left_pins().unwrap();
        assert_eq!(left[&1], cpus(pins));
    }
    let bad = xml.replace("in_progress", "halfway");
    let e = Record::parse(&bad).unwrap_err().to_string();
    assert!(e.contains("<last state=\"halfway\">"), "{e}");
}

#[test]
fn unknown_children_are_ignored_and_bad_values_named() {
    // The shape an older sketch wrote (tests/fixtures/domains/declared-gpu.xml).
    let old = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:action at=\"x\"/>\
               <p:before vcpu=\"0\" cpuset=\"0-1\"/></p:state>";
    assert_eq!(Record::parse(old).unwrap(), Record::default());
    let bad = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:original time=\"1\">\
               <p:vcpu id=\"0\" cpuset=\"0-x\"/></p:original></p:state>";
    let e = Record::parse(bad).unwrap_err().to_string();
    assert!(e.contains("<vcpu cpuset>") && e.contains("0-x"), "{e}");
    let e = Record::parse("<p:state xmlns:p=\"urn:other\"/>").unwrap_err();
    assert!(e.reason.contains("neither in namespace"), "{e}");
    assert!(Record::parse("<domain/>").is_err());
    let e = Record::parse("<state").unwrap_err();
    assert!(e.reason.contains("malformed"), "{e}");
    let no_time = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last/></p:state>";
    assert!(Record::parse(no_time)
        .unwrap_err()
        .reason
        .contains("not a Unix time"));
}

#[test]
fn a_record_written_by_the_string_typed_version_still_parses() {
    // Verbatim from a domain's live XML, written by pinsight before `action` and `result`
    // were enums: a restore after a repin whose metadata write failed.
    let old = "<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\">\
        <pinsight:last time=\"1764055201.250\" utc=\"2025-11-25T07:20:01Z\" \
        action=\"restore\" result=\"applied\" reason=\"pinsight restore: the pins from \
        before pinsight&apos;s first action (2025-11-25T07:20:00Z)\">\
        <pinsight:vcpu id=\"0\" before=\"1\" after=\"0\"/></pinsight:last></pinsight:state>";
    let last = Record::parse(old).unwrap().last.unwrap();
    assert_eq!(
        (last.action, last.result),
        (ActionKind::Restore, ActionResult::Applied)
    );
    assert_eq!(last.vcpus, BTreeMap::from([(0, (cpus("1"), cpus("0")))]));
    let failed = old.replace(
        "action=\"restore\" result=\"applied\"",
        "action=\"repin\" result=\"failed\"",
    );
    let last = Record::parse(&failed).unwrap().last.unwrap();
    assert_eq!(
        (last.action, last.result),
        (ActionKind::Repin, ActionResult::Failed)
    );
    assert!(Record::parse(&failed)
        .unwrap()
        .pinned_by_pinsight()
        .is_empty());
    // The JSON of `plan --undo --json` keeps the strings.
    let json = serde_json::to_value(&last).unwrap();
    assert_eq!(
        (json["action"].as_str(), json["result"].as_str()),
        (Some("repin"), Some("failed"))
    );
    let bad = old.replace("action=\"restore\"", "action=\"teleport\"");
    let e = Record::parse(&bad).unwrap_err().to_string();
    assert!(
        e.contains("<last action=\"teleport\"> is not one of repin, restore"),
        "{e}"
    );
}
