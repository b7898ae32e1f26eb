use super::*;
use crate::test_support::{cpus, domain_xml as fixture, operator_metadata};

fn parse_fixture(file: &str) -> DomainSpec {
    parse_domain_xml(&fixture(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// A minimal domain named "t" with `body` inside `<domain>`.
fn domain_with(body: &str) -> String {
    format!(
        "<domain type='kvm'><name>t</name><uuid>2d833cbe-a208-41db-bb80-226efe2b65e2</uuid>\
         {body}</domain>"
    )
}

fn pci(address: &str) -> GpuRef {
    GpuRef::Pci {
        address: address.to_string(),
    }
}

fn declared(address: &str) -> GpuRef {
    GpuRef::Declared {
        address: address.to_string(),
    }
}

#[test]
fn pci_gpu_fixture() {
    let spec = parse_fixture("pci-gpu.xml");
    assert_eq!(spec.name, "gpu-vm-pci");
    assert_eq!(spec.uuid, "2d833cbe-a208-41db-bb80-226efe2b65e2");
    assert_eq!(spec.vcpus, 4);
    // The USB hostdev is skipped; the guest-side <address> of each hostdev is not read.
    assert_eq!(spec.gpus, vec![pci("0000:3b:00.0"), pci("0000:af:00.0")]);
    let pins: Vec<(u32, String)> = spec
        .vcpu_pins
        .iter()
        .map(|(v, set)| (*v, set.to_string()))
        .collect();
    let expected = [(0, "2"), (1, "3"), (2, "18-19"), (3, "4-7,20")];
    assert_eq!(pins, expected.map(|(v, s)| (v, s.to_string())));
    assert_eq!(spec.emulator_pin, Some(cpus("0-1")));
    assert_eq!(spec.vcpu_cpuset, None);
    assert_eq!(spec.nova, None);
    assert_eq!(spec.policy.repin, None);
    assert_eq!(spec.state, None);
    assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
}

#[test]
fn mdev_gpu_fixture_uses_current_vcpus() {
    let spec = parse_fixture("mdev-gpu.xml");
    assert_eq!(spec.name, "gpu-vm-vgpu");
    assert_eq!(spec.vcpus, 2, "<vcpu current='2'>4</vcpu>");
    let uuid = "4b20d080-1b54-4048-85b3-a6a62d165c01".to_string();
    assert_eq!(spec.gpus, vec![GpuRef::Mdev { uuid }]);
    assert!(spec.vcpu_pins.is_empty());
    assert_eq!(spec.emulator_pin, None);
}

#[test]
fn declared_gpu_fixture_with_ps_prefix() {
    let xml = fixture("declared-gpu.xml");
    let spec = parse_domain_xml(&xml).unwrap();
    assert_eq!(
        spec.gpus,
        vec![declared("0000:3b:00.0")],
        "3B:00.0 is normalised"
    );
    assert_eq!(spec.policy.repin, Some(false));
    assert_eq!(spec.vcpu_cpuset, Some(cpus("0-1")));
    assert_eq!(spec.vcpu_pins.get(&1), Some(&cpus("1")));
    assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    let state = spec.state.unwrap();
    assert!(state.starts_with("<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\">"));
    assert!(state.ends_with("</pinsight:state>"), "{state}");
    assert!(state.contains("<pinsight:before vcpu=\"0\" cpuset=\"0-1\"/>"));
    assert!(xml.contains(&state), "state is the document's own text");
}

#[test]
fn nova_fixture() {
    let spec = parse_fixture("nova.xml");
    assert_eq!(spec.name, "instance-0000002a");
    let nova = spec.nova.unwrap();
    assert_eq!(nova.instance_name.as_deref(), Some("train-gpu-01"));
    assert_eq!(nova.project_name.as_deref(), Some("ml-research"));
    assert_eq!(
        nova.project_uuid.as_deref(),
        Some("995b4947cc4044fba99bade057053803")
    );
    assert_eq!(nova.flavor_name.as_deref(), Some("g1.xlarge.a100"));
    assert_eq!(spec.vcpus, 4);
    for vcpu in 0..4 {
        assert_eq!(spec.vcpu_pins[&vcpu], CpuSet::from_iter([vcpu + 4]));
    }
    assert_eq!(spec.emulator_pin, Some(cpus("4-7")));
    assert_eq!(spec.gpus, vec![pci("0000:3b:00.0")]);
}

#[test]
fn no_gpu_fixture() {
    let spec = parse_fixture("no-gpu.xml");
    assert_eq!(spec.name, "plain-vm");
    assert!(spec.gpus.is_empty());
    assert!(spec.vcpu_pins.is_empty());
    assert_eq!(spec.vcpu_cpuset, Some(cpus("0-2,4-5")));
    assert_eq!((spec.nova, spec.state), (None, None));
}

#[test]
fn bad_declarations_become_warnings_and_the_rest_is_kept() {
    let spec = parse_fixture("bad-declaration.xml");
    assert_eq!(spec.gpus, vec![declared("0000:af:00.0")]);
    assert_eq!(spec.policy.repin, None);
    let w = &spec.warnings;
    assert_eq!(w.len(), 4, "{w:#?}");
    assert!(
        w.iter()
            .all(|w| w.starts_with("domain gpu-vm-bad-declaration: ")),
        "{w:#?}"
    );
    assert!(
        w[0].contains("<gpu> address \"zz:zz\" is not a PCI address"),
        "{}",
        w[0]
    );
    assert!(w[1].contains("<gpu> has no address attribute"), "{}", w[1]);
    assert!(
        w[2].contains("<policy> repin \"maybe\" is neither"),
        "{}",
        w[2]
    );
    assert!(
        w[3].contains("<affinity> is not a known element"),
        "{}",
        w[3]
    );
}

#[test]
fn truncated_fixture_is_an_error_naming_the_domain() {
    let err = parse_domain_xml(&fixture("malformed.xml")).unwrap_err();
    assert!(
        matches!(&err, DomainXmlError::Malformed { domain, .. } if domain == "gpu-vm-truncated")
    );
    let msg = err.to_string();
    assert!(
        msg.starts_with("domain gpu-vm-truncated: malformed XML: "),
        "{msg}"
    );
}

#[test]
fn garbage_and_every_truncation_give_errors_not_panics() {
    for junk in [
        "",
        "   ",
        "<",
        "not xml",
        "\u{feff}",
        "<domain>",
        "<name>x</name><",
        "\0\0",
    ] {
        let err = parse_domain_xml(junk).unwrap_err();
        assert!(err.to_string().starts_with("domain "), "{junk:?}: {err}");
    }
    // Deep nesting does not overflow the stack: roxmltree parses without recursion.
    let deep = domain_with(&format!(
        "{}{}",
        "<a>".repeat(100_000),
        "</a>".repeat(100_000)
    ));
    assert_eq!(parse_domain_xml(&deep).unwrap().name, "t");
    let err = parse_domain_xml("garbage").unwrap_err();
    assert_eq!(err.to_string().split(':').next(), Some("domain unknown"));
    for file in ["pci-gpu.xml", "nova.xml", "declared-gpu.xml"] {
        let xml = fixture(file);
        let end = xml.rfind("</domain>").unwrap() + "</domain>".len();
        for cut in (0..end).filter(|&i| xml.is_char_boundary(i)) {
            assert!(
                parse_domain_xml(&xml[..cut]).is_err(),
                "{file} cut at {cut} parsed"
            );
        }
    }
}

#[test]
fn missing_name_or_uuid_and_wrong_root() {
    let no_name = parse_domain_xml("<domain><uuid>abc</uuid></domain>").unwrap_err();
    assert_eq!(
        no_name.to_string(),
        "domain unknown: missing or empty <name>"
    );
    let blank = parse_domain_xml("<domain><name>  </name><uuid>abc</uuid></domain>");
    assert_eq!(
        blank.unwrap_err().to_string(),
        "domain unknown: missing or empty <name>"
    );
    let no_uuid = parse_domain_xml("<domain><name>vm1</name></domain>").unwrap_err();
    assert_eq!(no_uuid.to_string(), "domain vm1: missing or empty <uuid>");
    let network = parse_domain_xml("<network><name>default</name></network>").unwrap_err();
    assert_eq!(
        network.to_string(),
        "domain default: root element is <network>, not <domain>"
    );
}

#[test]
fn operator_element_in_any_prefix_or_default_namespace() {
    for element in [
        r#"<domain xmlns="urn:pinsight:domain:1"><gpu address="5e:00.0"/><policy repin="on"/></domain>"#.to_string(),
        operator_metadata("0000:5e:00.0", r#"<pinsight:policy repin="ON"/>"#),
    ] {
        let spec =
            parse_domain_xml(&domain_with(&format!("<metadata>{element}</metadata>"))).unwrap();
        assert_eq!(spec.gpus, vec![declared("0000:5e:00.0")], "{element}");
        assert_eq!(spec.policy.repin, Some(true), "{element}");
    }
    let twice = r#"<ps:domain xmlns:ps="urn:pinsight:domain:1"><ps:policy repin="off"/><ps:policy repin="on"/></ps:domain>"#;
    let spec = parse_domain_xml(&domain_with(&format!("<metadata>{twice}</metadata>"))).unwrap();
    assert_eq!(spec.policy.repin, Some(false), "the first <policy> applies");
    assert_eq!(
        spec.warnings,
        ["domain t: pinsight metadata <policy> appears twice; the first one applies; declaration ignored"]
    );
    // Same local names in another namespace are someone else's: not read, no warning.
    let other = r#"<x:domain xmlns:x="urn:other"><x:gpu address="0000:01:00.0"/></x:domain>"#;
    let spec = parse_domain_xml(&domain_with(&format!("<metadata>{other}</metadata>"))).unwrap();
    assert!(spec.gpus.is_empty() && spec.warnings.is_empty());
    // Our namespace under the wrong element name is a lost declaration: warn.
    let misnamed =
        r#"<ps:config xmlns:ps="urn:pinsight:domain:1"><ps:policy repin="off"/></ps:config>"#;
    let spec = parse_domain_xml(&domain_with(&format!("<metadata>{misnamed}</metadata>"))).unwrap();
    assert_eq!(spec.policy.repin, None);
    assert!(spec.warnings[0].contains("<config> in urn:pinsight:domain:1 is not <domain>"));
}

#[test]
fn declared_gpus_are_not_duplicated() {
    let xml = domain_with(
        r#"<metadata><ps:domain xmlns:ps="urn:pinsight:domain:1">
             <ps:gpu address="0000:3b:00.0"/><ps:gpu address="5e:00.0"/><ps:gpu address="0000:5E:00.0"/>
           </ps:domain></metadata>
           <devices><hostdev mode='subsystem' type='pci'><source>
             <address domain='0x0000' bus='0x3b' slot='0x00' function='0x0'/></source></hostdev>
           </devices>"#,
    );
    let spec = parse_domain_xml(&xml).unwrap();
    assert_eq!(
        spec.gpus,
        vec![pci("0000:3b:00.0"), declared("0000:5e:00.0")]
    );
}

#[test]
fn hostdev_variants() {
    let xml = domain_with(
        "<devices>
           <hostdev mode='subsystem' type='pci'><source><address bus='0xAF' slot='0x1f' function='0x7'/></source>
             <address type='pci' domain='0x0000' bus='0x00' slot='0x05' function='0x0'/></hostdev>
           <hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000' bus='0xaf' slot='0x1f' function='0x7'/></source></hostdev>
           <hostdev type='mdev' model='vfio-pci'><source><address uuid='4B20D080-1B54-4048-85B3-A6A62D165C01'/></source></hostdev>
           <hostdev mode='capabilities' type='misc'><source><char>/dev/input/event3</char></source></hostdev>
           <hostdev mode='subsystem' type='scsi'><source><adapter name='scsi_host0'/><address bus='0' target='0' unit='0'/></source></hostdev>
         </devices>",
    );
    let spec = parse_domain_xml(&xml).unwrap();
    let uuid = "4b20d080-1b54-4048-85b3-a6a62d165c01".to_string();
    assert_eq!(spec.gpus, vec![pci("0000:af:1f.7"), GpuRef::Mdev { uuid }]);
}

#[test]
fn unreadable_hostdev_is_an_error_naming_it() {
    let no_source = domain_with("<devices><hostdev mode='subsystem' type='pci'/></devices>");
    let err = parse_domain_xml(&no_source).unwrap_err();
    assert_eq!(
        err.to_string(),
        "domain t: <hostdev type='pci'> has no <source><address>"
    );
    let bad_bus = domain_with(
        "<devices><hostdev mode='subsystem' type='pci'><source>\
         <address bus='0x3g' slot='0x00' function='0x0'/></source></hostdev></devices>",
    );
    let msg = parse_domain_xml(&bad_bus).unwrap_err().to_string();
    assert!(
        msg.starts_with("domain t: <hostdev type='pci'> source address"),
        "{msg}"
    );
    assert!(msg.contains("bus=\"0x3g\""), "{msg}");
}

#[test]
fn vcpu_and_cputune_values() {
    let spec = parse_domain_xml(&domain_with("<vcpu cpuset='0-5,^3'>8</vcpu>")).unwrap();
    assert_eq!((spec.vcpus, spec.vcpu_cpuset), (8, Some(cpus("0-2,4-5"))));
    assert_eq!(
        parse_domain_xml(&domain_with("")).unwrap().vcpus,
        1,
        "libvirt's default"
    );
    let cases = [
        (
            "<vcpu>four</vcpu>",
            "domain t: <vcpu> count \"four\" is not a positive number",
        ),
        (
            "<vcpu>0</vcpu>",
            "domain t: <vcpu> count \"0\" is not a positive number",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1-x'/></cputune>",
            "domain t: <vcpupin vcpu='0'>: invalid CPU list \"1-x\": \"x\" is not a CPU number",
        ),
        (
            "<cputune><vcpupin vcpu='0'/></cputune>",
            "domain t: <vcpupin vcpu='0'> has no cpuset",
        ),
        (
            "<cputune><vcpupin vcpu='a' cpuset='1'/></cputune>",
            "domain t: <vcpupin vcpu=\"a\"> is not a vCPU number",
        ),
        (
            "<cputune><vcpupin vcpu='0' cpuset='1'/><vcpupin vcpu='0' cpuset='2'/></cputune>",
            "domain t: <cputune> pins vCPU 0 twice",
        ),
        (
            "<cputune><emulatorpin cpuset='1,^1'/></cputune>",
            "domain t: <emulatorpin>: CPU list \"1,^1\" selects no CPU",
        ),
        (
            "<vcpu cpuset='0-3,^x'>2</vcpu>",
            "domain t: <vcpu cpuset>: invalid CPU list \"0-3,^x\": \"^x\" is not an exclusion",
        ),
    ];
    for (body, expected) in cases {
        let err = parse_domain_xml(&domain_with(body)).unwrap_err();
        assert_eq!(err.to_string(), expected, "{body}");
    }
}

#[test]
fn pci_address_parts() {
    assert_eq!(
        pci_address_from_parts("0x0000", "0x3b", "0x00", "0x0").unwrap(),
        "0000:3b:00.0"
    );
    assert_eq!(
        pci_address_from_parts("0", "3B", "1f", "7").unwrap(),
        "0000:3b:1f.7"
    );
    assert_eq!(
        pci_address_from_parts("0x10000", "0x01", "0x0", "0x0").unwrap(),
        "10000:01:00.0"
    );
    for (d, b, s, f) in [
        ("0", "0x3b", "0x20", "0"),
        ("0", "0x3b", "0", "8"),
        ("0", "0x100", "0", "0"),
        ("0", "", "0", "0"),
        ("0", "0x", "0", "0"),
        ("0", "+3b", "0", "0"),
        ("0", "zz", "0", "0"),
        ("0x1ffffffff", "0", "0", "0"),
    ] {
        assert_eq!(pci_address_from_parts(d, b, s, f), None, "{d} {b} {s} {f}");
    }
}

#[test]
fn nova_namespaces() {
    let legacy = r#"<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.0">
        <nova:name>old</nova:name><nova:owner/></nova:instance>"#;
    let current = r#"<n:instance xmlns:n="http://openstack.org/xmlns/libvirt/nova/1.1">
        <n:name>new</n:name></n:instance>"#;
    let spec = parse_domain_xml(&domain_with(&format!("<metadata>{legacy}</metadata>"))).unwrap();
    let nova = spec.nova.unwrap();
    assert_eq!(nova.instance_name.as_deref(), Some("old"));
    assert_eq!((nova.project_name, nova.flavor_name), (None, None));
    for both in [format!("{legacy}{current}"), format!("{current}{legacy}")] {
        let spec = parse_domain_xml(&domain_with(&format!("<metadata>{both}</metadata>"))).unwrap();
        assert_eq!(spec.nova.unwrap().instance_name.as_deref(), Some("new"));
    }
}

#[test]
fn serialises_cpusets_as_lists() {
    let value = serde_json::to_value(parse_fixture("pci-gpu.xml")).unwrap();
    assert_eq!(value["vcpu_pins"]["3"], "4-7,20");
    assert_eq!(value["emulator_pin"], "0-1");
    assert_eq!(value["gpus"][1]["Pci"]["address"], "0000:af:00.0");
}
