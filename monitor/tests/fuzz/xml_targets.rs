//! Targets for the XML readers: the whole domain XML (fixtures mutated), the operator and
//! Nova metadata elements and pinsight's state record (built entry by entry, then maybe
//! mutated), and issue 11's metadata bomb with its relatives.

use pinsight::cpuset::{CpuSet, MAX_CPUS};
use pinsight::inventory::domain_xml::{
    cut_label_value, parse_domain_xml, SpecCache, MAX_LABEL_VALUE_BYTES, MAX_METADATA_ENTRIES,
    NOVA_NS, NOVA_NS_LEGACY,
};
use pinsight::policy::record::{Action, ActionKind, ActionResult, Pins, Record};
use proptest::prelude::*;

use crate::engine::{bounded, cases, fuzz, mutate, mutations, seeds};

/// Tokens the byte-level mutations insert into XML seeds.
const XML_TOKENS: &[&str] = &[
    "<",
    ">",
    "/>",
    "</",
    "\"",
    "'",
    "=",
    "&amp;",
    "&#0;",
    "&#x10FFFF;",
    "&#1114112;",
    "&lt;",
    "&unknown;",
    "<![CDATA[x]]>",
    "<!--c-->",
    "<?pi x?>",
    "\u{feff}",
    "é",
    "\u{0}",
    "<!DOCTYPE d [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;'>]>",
    "&b;",
    "xmlns:p='urn:pinsight:domain:1'",
    "xmlns:p='urn:pinsight:state:1'",
    "xmlns='urn:pinsight:domain:1'",
    "0-1048575",
    "0-8191",
    "8192",
    "4294967295",
    "99999999999999999999",
    "-1",
    "^0",
    ",",
    "0-",
    "cpuset='0-3,^2'",
    "<vcpupin vcpu='0' cpuset='0'/>",
    "<vcpupin vcpu='0' cpuset='1'/>",
    "<emulatorpin cpuset='0'/>",
    "<vcpu current='0'>4</vcpu>",
    "<cputune>",
    "</cputune>",
    "<metadata>",
    "</metadata>",
    "<hostdev mode='subsystem' type='pci'><source><address domain='0x0000' bus='0x3b' \
     slot='0x00' function='0x0'/></source></hostdev>",
    "<hostdev type='mdev'><source><address uuid=''/></source></hostdev>",
    "<p:gpu address='0000:3b:00.0'/>",
    "<p:policy repin='on'/>",
    "<p:policy repin='maybe'/>",
    "<p:domain xmlns:p='urn:pinsight:domain:1'>",
    "</p:domain>",
];

fn check_domain(xml: &str) -> Result<(), TestCaseError> {
    if let Ok(spec) = bounded("domain xml", || parse_domain_xml(xml)) {
        prop_assert!(spec.vcpus > 0 && !spec.name.is_empty() && !spec.uuid.is_empty());
        let sets = spec
            .vcpu_pins
            .values()
            .chain(&spec.emulator_pin)
            .chain(&spec.vcpu_cpuset);
        for set in sets {
            prop_assert!(!set.is_empty() && set.iter().all(|cpu| cpu < MAX_CPUS));
        }
        prop_assert!(
            spec.warnings.len() <= MAX_METADATA_ENTRIES + 4,
            "{}",
            spec.warnings.len()
        );
    }
    // As the daemon reads it (through the cache): CPU lists within a 4-CPU host's possible
    // CPUs, and the same answer from the cache as from a parse.
    let possible = CpuSet::from_range(0, 3);
    // bounded() may run the parse again on a slow machine: a repeat is a cache hit.
    let cache = std::cell::RefCell::new(SpecCache::default());
    let cached = bounded("domain xml (cache)", || {
        cache.borrow_mut().parse(xml, &possible)
    });
    if let Ok(spec) = &cached {
        let sets = spec
            .vcpu_pins
            .values()
            .chain(&spec.emulator_pin)
            .chain(&spec.vcpu_cpuset);
        for set in sets {
            prop_assert!(set.is_subset(&possible), "{set} outside {possible}");
        }
    }
    let mut cache = cache.into_inner();
    let again = cache.parse(xml, &possible);
    prop_assert_eq!(
        cached
            .as_ref()
            .map(|s| &s.name)
            .map_err(ToString::to_string),
        again.as_ref().map(|s| &s.name).map_err(ToString::to_string)
    );
    prop_assert_eq!(cache.parses(), 1);
    Ok(())
}

#[test]
fn fuzz_domain_xml() {
    let seeds = seeds("tests/fixtures/domains", ".xml");
    let strategy = (0..seeds.len(), mutations(8));
    fuzz("domain xml", cases(1), strategy, |(seed, edits)| {
        check_domain(&mutate(&seeds[seed].1, &edits, XML_TOKENS))
    });
}

/// A domain that parses, with `element` as its only metadata.
pub(crate) fn domain_with_metadata(element: &str) -> String {
    format!(
        "<domain type='kvm'><name>fuzz</name><uuid>2d833cbe-a208-41db-bb80-226efe2b65e2</uuid>\
         <vcpu>2</vcpu><metadata>{element}</metadata></domain>"
    )
}

/// Text made safe for an XML attribute or text node (what an operator's tool would write).
fn escaped(text: &str) -> String {
    text.chars()
        .filter(|&c| xml_char(c))
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        // `]]>` in character data is not well-formed XML, escaped or not its other
        // characters: any::<String>() found it (a CI run failed on it).
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Whether XML 1.0 allows `c` at all (even as a character reference).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
}

/// Text as pinsight's own reasons or a tool's labels may hold: control characters, markup.
fn odd_text() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => any::<String>(),
        1 => "[\\x00-\\x20a<>&\"'\\n\\r\\t\\u{fffe}]{0,16}",
        1 => ".{0,32}",
    ]
}

fn pci_address_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\\.[0-7]",
        "[0-9a-fA-F:.x ]{0,16}",
        any::<String>(),
    ]
}

#[test]
fn fuzz_operator_element() {
    let entry = prop_oneof![
        4 => pci_address_text().prop_map(|a| format!("<p:gpu address='{}'/>", escaped(&a))),
        1 => Just("<p:gpu/>".to_string()),
        3 => prop_oneof![Just("on".to_string()), Just("OFF".to_string()), any::<String>()]
            .prop_map(|v| format!("<p:policy repin='{}'/>", escaped(&v))),
        1 => "[a-z]{1,8}".prop_map(|n| format!("<p:{n}/>")),
        1 => Just("<q:gpu xmlns:q='urn:other' address='0000:3b:00.0'/>".to_string()),
        1 => any::<String>().prop_map(|t| escaped(&t)),
    ];
    let name = prop::sample::select(vec!["domain", "domain", "Domain", "state"]);
    let strategy = (prop::collection::vec(entry, 0..48), name, mutations(3));
    fuzz(
        "operator element",
        cases(1),
        strategy,
        |(entries, name, edits)| {
            let element = format!(
                "<p:{name} xmlns:p='urn:pinsight:domain:1'>{}</p:{name}>",
                entries.concat()
            );
            if edits.is_empty() {
                // Whatever the operator wrote, the VM is still read (bad entries are warnings).
                let spec = bounded("operator element", || {
                    parse_domain_xml(&domain_with_metadata(&element))
                })
                .map_err(|e| TestCaseError::fail(format!("{e}\n{element}")))?;
                prop_assert!(spec.warnings.len() <= entries.len().max(1));
                prop_assert!(spec.gpus.len() <= entries.len());
                return Ok(());
            }
            check_domain(&mutate(&domain_with_metadata(&element), &edits, XML_TOKENS))
        },
    );
}

#[test]
fn fuzz_nova_element() {
    let label =
        || prop_oneof![3 => "[a-zA-Z0-9 ._-]{0,40}", 1 => ".{200,400}", 1 => any::<String>()];
    let ns = prop::sample::select(vec![NOVA_NS, NOVA_NS_LEGACY, "urn:other"]);
    let strategy = (label(), label(), label(), label(), ns, mutations(3));
    fuzz(
        "nova element",
        cases(1),
        strategy,
        |(name, project, uuid, flavor, ns, edits)| {
            let element = format!(
                "<nova:instance xmlns:nova='{ns}'><nova:name>{}</nova:name>\
             <nova:owner><nova:project uuid='{}'>{}</nova:project></nova:owner>\
             <nova:flavor name='{}'/></nova:instance>",
                escaped(&name),
                escaped(&uuid),
                escaped(&project),
                escaped(&flavor)
            );
            let xml = mutate(&domain_with_metadata(&element), &edits, XML_TOKENS);
            let Ok(spec) = bounded("nova element", || parse_domain_xml(&xml)) else {
                prop_assert!(
                    !edits.is_empty(),
                    "an escaped Nova element made the domain unreadable"
                );
                return Ok(());
            };
            let labels = spec.nova.iter().flat_map(|n| {
                [
                    &n.instance_name,
                    &n.project_name,
                    &n.project_uuid,
                    &n.flavor_name,
                ]
            });
            for value in labels.flatten() {
                let (cut, was_cut) = cut_label_value(value);
                prop_assert!(cut.len() <= MAX_LABEL_VALUE_BYTES && value.starts_with(cut));
                prop_assert_eq!(was_cut, value.len() > MAX_LABEL_VALUE_BYTES);
            }
            Ok(())
        },
    );
}

fn record() -> impl Strategy<Value = Record> {
    let cpus = || {
        prop::collection::btree_set(0u32..MAX_CPUS, 1..6)
            .prop_map(|s| s.into_iter().collect::<CpuSet>())
    };
    let time = || (0u64..4_000_000_000_000).prop_map(|ms| ms as f64 / 1000.0);
    let pins = (
        time(),
        prop::collection::btree_map(0u32..512, cpus(), 0..8),
        prop::option::of(cpus()),
    )
        .prop_map(|(time, vcpus, emulator)| Pins {
            time,
            vcpus,
            emulator,
        });
    let action = (
        time(),
        prop::sample::select(vec![ActionKind::Repin, ActionKind::Restore]),
        prop::sample::select(vec![
            ActionResult::InProgress,
            ActionResult::Applied,
            ActionResult::Failed,
            ActionResult::RolledBack,
        ]),
        odd_text(),
        prop::collection::btree_map(0u32..512, (cpus(), cpus()), 0..8),
        prop::option::of((cpus(), cpus())),
    )
        .prop_map(|(time, action, result, reason, vcpus, emulator)| Action {
            time,
            action,
            result,
            reason,
            vcpus,
            emulator,
        });
    let uuid = prop::option::of("[0-9a-f]{8}-[0-9a-f]{4}");
    (uuid, prop::option::of(pins), prop::option::of(action)).prop_map(|(uuid, original, last)| {
        Record {
            uuid,
            original,
            last,
        }
    })
}

#[test]
fn fuzz_state_record() {
    let strategy = (record(), any::<bool>(), mutations(6));
    fuzz(
        "state record",
        cases(1),
        strategy,
        |(record, prefixed, edits)| {
            let mut xml = record.to_xml();
            if prefixed {
                // As libvirt stores it: every element of the namespace prefixed.
                xml = xml
                    .replacen("<state", "<ps:state xmlns:ps='urn:pinsight:state:1'", 1)
                    .replace("</", "</ps:")
                    .replace("<original", "<ps:original")
                    .replace("<last", "<ps:last")
                    .replace("<vcpu", "<ps:vcpu")
                    .replace("<emulator", "<ps:emulator");
            }
            if edits.is_empty() {
                let parsed = bounded("state record", || Record::parse(&xml))
                    .map_err(|e| TestCaseError::fail(format!("{e}\n{xml}")))?;
                // Characters XML cannot hold are written as U+FFFD.
                let mut expected = record;
                if let Some(last) = &mut expected.last {
                    last.reason = last
                        .reason
                        .chars()
                        .map(|c| if xml_char(c) { c } else { '\u{fffd}' })
                        .collect();
                }
                prop_assert_eq!(parsed, expected, "{}", xml);
                return Ok(());
            }
            let xml = mutate(&xml, &edits, XML_TOKENS);
            if let Ok(parsed) = bounded("state record", || Record::parse(&xml)) {
                let sets = parsed
                    .original
                    .iter()
                    .flat_map(|p| p.vcpus.values().chain(&p.emulator));
                for set in sets {
                    prop_assert!(!set.is_empty() && set.iter().all(|cpu| cpu < MAX_CPUS));
                }
            }
            Ok(())
        },
    );
}

/// Issue 11's metadata bomb and its relatives: many entries with the widest CPU lists, in a
/// state element and in the operator element of a whole domain. Memory stays bounded
/// whether they are refused (past the limits) or read.
#[test]
fn fuzz_hostile_metadata_sizes() {
    let list = prop::sample::select(vec!["0-1048575", "0-8191", "0-4095,4097-8191", "0"]);
    let strategy = (0usize..6000, list, 0usize..6000, any::<bool>());
    fuzz(
        "hostile metadata",
        cases(20),
        strategy,
        |(vcpus, list, gpus, prefixed)| {
            let entries: String = (0..vcpus)
                .map(|i| format!("<vcpu id=\"{i}\" before=\"{list}\" after=\"{list}\"/>"))
                .collect();
            let state = format!("<state><last time=\"1\" action=\"repin\" result=\"applied\">{entries}</last></state>");
            let parsed = bounded("hostile state", || Record::parse(&state));
            if let Ok(record) = &parsed {
                prop_assert!(record
                    .last
                    .as_ref()
                    .is_some_and(|l| l.vcpus.len() <= MAX_METADATA_ENTRIES));
            }
            let p = if prefixed { "p:" } else { "" };
            let operator = format!(
                "<{p}domain xmlns{}='urn:pinsight:domain:1'>{}</{p}domain>",
                if prefixed { ":p" } else { "" },
                format!("<{p}gpu address='0000:3b:00.0'/><{p}policy repin='x'/>").repeat(gpus / 2)
            );
            let xml = domain_with_metadata(&format!(
                "{operator}{}",
                state.replace("<state>", "<state xmlns='urn:pinsight:state:1'>")
            ));
            let spec = bounded("hostile domain", || parse_domain_xml(&xml));
            if let Ok(spec) = spec {
                prop_assert!(spec.warnings.len() <= MAX_METADATA_ENTRIES && spec.gpus.len() <= 1);
            }
            Ok(())
        },
    );
}
