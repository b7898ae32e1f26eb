//! The parser over real transcripts captured from this machine's QEMU 7.2
//! (monitor/tests/fixtures/qmp/*.txt: "> " lines sent, "< " lines received).

use super::*;

fn transcript(name: &str) -> Vec<(String, String)> {
    let path = format!("{}/tests/fixtures/qmp/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines()
        .map(|l| {
            let (dir, rest) = l.split_at(2);
            (dir.trim().to_string(), rest.to_string())
        })
        .collect()
}

/// The reply lines (not events) to the command whose request contains `command`.
fn reply_to(lines: &[(String, String)], command: &str) -> String {
    let sent = lines
        .iter()
        .position(|(d, l)| d == ">" && l.contains(command))
        .unwrap_or_else(|| panic!("{command} not in transcript"));
    lines[sent + 1..]
        .iter()
        .find(|(d, l)| d == "<" && !l.contains("\"event\""))
        .unwrap()
        .1
        .clone()
}

fn returned(line: &str, command: &str) -> Value {
    match parse_message(line, command).unwrap() {
        Message::Return(v) => v,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_named_vm_with_two_vcpus() {
    let t = transcript("named-2vcpu.txt");
    assert_eq!(parse_greeting(&t[0].1).unwrap().version, "7.2.22");
    let name: NameInfo = decode(returned(&reply_to(&t, "\"query-name\""), "n"), "n").unwrap();
    assert_eq!(name.name.as_deref(), Some("fixture-vm"));
    let uuid: UuidInfo = decode(returned(&reply_to(&t, "query-uuid"), "u"), "u").unwrap();
    assert_eq!(uuid.known(), Some("6b1c7a3e-0c2f-4c7e-9a53-2f0c1e9d8a11"));
    let cpus: Vec<CpuInfoFast> =
        decode(returned(&reply_to(&t, "query-cpus-fast"), "c"), "c").unwrap();
    assert_eq!(cpus.iter().map(|c| c.cpu_index).collect::<Vec<_>>(), [0, 1]);
    assert!(cpus.iter().all(|c| c.thread_id > 0));
    assert_ne!(cpus[0].thread_id, cpus[1].thread_id);
    // An emulated VGA has no `host` property: refused, naming the command and QEMU's words.
    let err = parse_message(&reply_to(&t, "qom-get"), "qom-get").unwrap_err();
    assert!(
        matches!(&err, ReplyError::Refused { class, desc, .. } if class == "GenericError" && desc.contains("VGA.host")),
        "{err}"
    );
}

#[test]
fn events_between_commands_are_told_apart_from_replies() {
    let t = transcript("named-2vcpu.txt");
    let event = t.iter().find(|(_, l)| l.contains("\"RESUME\"")).unwrap();
    assert_eq!(
        parse_message(&event.1, "cont").unwrap(),
        Message::Event("RESUME".into())
    );
}

#[test]
fn a_vm_without_name_or_uuid_says_so() {
    let t = transcript("anonymous.txt");
    let name: NameInfo = decode(returned(&reply_to(&t, "\"query-name\""), "n"), "n").unwrap();
    assert_eq!(name.name, None);
    let uuid: UuidInfo = decode(returned(&reply_to(&t, "query-uuid"), "u"), "u").unwrap();
    assert_eq!(uuid.known(), None);
    let err = parse_message(&reply_to(&t, "no-such-command"), "no-such-command").unwrap_err();
    assert!(err.to_string().contains("CommandNotFound"), "{err}");
}

#[test]
fn qom_list_finds_devices_by_type() {
    let t = transcript("qom-list.txt");
    let line = reply_to(&t, "/machine/peripheral\"}");
    let children: Vec<QomProperty> = decode(returned(&line, "qom-list"), "l").unwrap();
    let kinds: Vec<&str> = children.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["string", "child<pci-bridge>", "child<VGA>"]);
    assert!(!children.iter().any(|c| c.kind == VFIO_PCI_CHILD));
}

#[test]
fn vfio_addresses_come_from_host_or_else_sysfsdev() {
    assert_eq!(
        vfio_host_address(Some("0000:3b:00.0"), None).as_deref(),
        Some("0000:3b:00.0")
    );
    assert_eq!(
        vfio_host_address(Some(""), Some("/sys/bus/pci/devices/0000:AF:00.1/")).as_deref(),
        Some("0000:af:00.1")
    );
    // QEMU shows an unset `host` as all zeroes.
    assert_eq!(vfio_host_address(Some("0000:00:00.0"), None), None);
    assert_eq!(vfio_host_address(None, Some("/dev/null")), None);
}

#[test]
fn garbage_is_an_error_naming_what_was_expected_never_a_panic() {
    for line in [
        "",
        "garbage",
        "{\"QMP\"",
        "[1,2]",
        "{\"x\": 1}",
        "\u{0}\u{ff}",
    ] {
        assert!(
            parse_greeting(line).is_err() || line.contains("QMP"),
            "{line:?}"
        );
        let err = parse_message(line, "query-name").unwrap_err().to_string();
        assert!(
            err.contains("expected") || err.contains("not JSON"),
            "{line:?}: {err}"
        );
    }
    let err = parse_greeting("{\"return\": {}}").unwrap_err().to_string();
    assert!(err.contains("greeting"), "{err}");
    let long = "x".repeat(500);
    let err = parse_message(&long, "q").unwrap_err().to_string();
    assert!(
        err.len() < 300,
        "the error shows only the start of a long line: {err}"
    );
    // A reply of the wrong shape.
    let err = decode::<Vec<CpuInfoFast>>(serde_json::json!({"a": 1}), "a list of vCPUs")
        .unwrap_err()
        .to_string();
    assert!(err.contains("a list of vCPUs"), "{err}");
}
