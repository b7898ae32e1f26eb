//! Fuzz targets for every parser of outside input, run by `cargo test` for a bounded number
//! of inputs each (PINSIGHT_FUZZ_CASES per target; see README "Fuzzing" for long runs).
//! Each input must parse without a panic, within 100 ms and 64 MiB; each target prints how
//! many inputs it executed.

#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/sysfs_tree.rs"]
mod sysfs_tree;

use std::collections::BTreeSet;
use std::path::Path;

use engine::{bounded, cases, fuzz, mutate, mutations, seeds};
use pinsight::config::Config;
use pinsight::cpuset::{CpuSet, MAX_CPUS};
use pinsight::inventory::domain_xml::{
    cut_label_value, parse_domain_xml, MAX_LABEL_VALUE_BYTES, MAX_METADATA_ENTRIES, NOVA_NS,
    NOVA_NS_LEGACY,
};
use pinsight::policy::record::{Action, ActionKind, ActionResult, Pins, Record};
use proptest::prelude::*;

#[global_allocator]
static ALLOC: engine::CountingAlloc = engine::CountingAlloc;

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

/// Random numbers as a CPU list might spell them: small, near the bound, huge, overflowing.
fn cpu_number() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0u32..64).prop_map(|n| n.to_string()),
        2 => (MAX_CPUS - 8..MAX_CPUS + 8).prop_map(|n| n.to_string()),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => "[0-9]{20,40}",
        1 => prop::sample::select(vec!["-1", "+1", "", " ", "0x1", "1e3", "١"]).prop_map(String::from),
    ]
}

/// A kernel / libvirt CPU list: structured items or free text.
fn cpu_list_text() -> impl Strategy<Value = String> {
    let item = prop_oneof![
        3 => cpu_number(),
        3 => (cpu_number(), cpu_number()).prop_map(|(a, b)| format!("{a}-{b}")),
        1 => cpu_number().prop_map(|n| format!("^{n}")),
    ];
    let sep = prop::sample::select(vec![",", ", ", " ,", ",,", "\n,"]);
    prop_oneof![
        5 => prop::collection::vec((item, sep), 0..12).prop_map(|items| {
            items.into_iter().map(|(i, s)| format!("{i}{s}")).collect::<String>()
        }),
        2 => "[0-9,\\- ^+\n]{0,48}",
        1 => any::<String>(),
    ]
}

#[test]
fn fuzz_cpuset() {
    fuzz("cpuset", cases(1), cpu_list_text(), |text| {
        let parsed = bounded("cpuset", || text.parse::<CpuSet>());
        if let Ok(set) = parsed {
            prop_assert!(set.iter().all(|cpu| cpu < MAX_CPUS), "{text:?} -> {set}");
            prop_assert!(set.len() <= MAX_CPUS as usize);
            prop_assert_eq!(set.iter().count(), set.len());
            let again: CpuSet = set
                .to_string()
                .parse()
                .map_err(|e| TestCaseError::fail(format!("{set} does not parse back: {e}")))?;
            prop_assert_eq!(again, set);
        }
        Ok(())
    });
}

/// The range-based CpuSet against a BTreeSet model: same members, same order, same ops.
#[test]
fn fuzz_cpuset_ops_match_a_btreeset() {
    let ids = || prop::collection::vec(prop_oneof![0u32..40, 0u32..MAX_CPUS], 0..24);
    fuzz(
        "cpuset ops",
        cases(1),
        (ids(), ids(), 0u32..48),
        |(a, b, probe)| {
            let (ma, mb): (BTreeSet<u32>, BTreeSet<u32>) =
                (a.iter().copied().collect(), b.iter().copied().collect());
            let (sa, sb): (CpuSet, CpuSet) =
                (a.iter().copied().collect(), b.iter().copied().collect());
            let list = |s: &CpuSet| s.iter().collect::<Vec<_>>();
            prop_assert_eq!(list(&sa), ma.iter().copied().collect::<Vec<_>>());
            prop_assert_eq!(sa.len(), ma.len());
            prop_assert_eq!(sa.contains(probe), ma.contains(&probe));
            prop_assert_eq!(
                list(&sa.intersection(&sb)),
                ma.intersection(&mb).copied().collect::<Vec<_>>()
            );
            prop_assert_eq!(
                list(&sa.difference(&sb)),
                ma.difference(&mb).copied().collect::<Vec<_>>()
            );
            prop_assert_eq!(sa.is_subset(&sb), ma.is_subset(&mb));
            prop_assert_eq!(sa.cmp(&sb), ma.cmp(&mb));
            prop_assert_eq!(sa == sb, ma == mb);
            let mut grown = sa.clone();
            for cpu in &b {
                grown.insert(*cpu);
            }
            let union: CpuSet = ma.union(&mb).copied().collect();
            prop_assert_eq!(grown, union);
            Ok(())
        },
    );
}

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
fn domain_with_metadata(element: &str) -> String {
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
        prop::sample::select(vec![ActionResult::Applied, ActionResult::Failed]),
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
    (prop::option::of(pins), prop::option::of(action))
        .prop_map(|(original, last)| Record { original, last })
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
                    .replacen("<state>", "<ps:state xmlns:ps='urn:pinsight:state:1'>", 1)
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

/// TOML lines of the config's own keys with odd values.
fn config_lines() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "listen",
        "sysfs_root",
        "tick_seconds",
        "rescan_seconds",
        "remote_ratio_window_seconds",
        "cross_socket_penalty",
        "per_vcpu_metrics",
        "[probes]",
        "max_threads",
        "max_exit_keys",
        "kvm_exit_source",
        "[policy]",
        "mode",
        "remote_ratio_high",
        "remote_ratio_clear",
        "cooldown_seconds",
        "max_repins_per_minute",
        "reserved_cpus",
        "max_oversubscription",
        "opt_in",
        "unknown_key",
    ]);
    let value = prop_oneof![
        Just("nan".to_string()),
        Just("inf".to_string()),
        Just("-inf".to_string()),
        Just("-1".to_string()),
        Just("1e308".to_string()),
        Just("18446744073709551616".to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        cpu_list_text().prop_map(|t| format!("{t:?}")),
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"[::1]:99999\"".to_string()),
        Just("\"enforce\"".to_string()),
        Just("[1, [2]]".to_string()),
        Just("{ a = 1 }".to_string()),
    ];
    prop::collection::vec((key, value), 0..12).prop_map(|lines| {
        lines
            .into_iter()
            .map(|(k, v)| {
                if k.starts_with('[') {
                    format!("{k}\n")
                } else {
                    format!("{k} = {v}\n")
                }
            })
            .collect()
    })
}

#[test]
fn fuzz_config_toml() {
    let example = include_str!("../../deploy/pinsight.toml");
    let tokens = &[
        "=",
        "[",
        "]",
        "\"",
        "'''",
        "#",
        "\n",
        "[policy]",
        "[probes]",
        "nan",
        "-1",
        "1e999",
        "0-1048575",
        "\\u0000",
        "{",
        "}",
        ".",
        "inf",
    ];
    let strategy = prop_oneof![
        (Just(true), mutations(6)).prop_map(|(_, m)| (None, m)),
        config_lines().prop_map(|t| (Some(t), Vec::new())),
    ];
    let path = Path::new("fuzz.toml");
    fuzz("config toml", cases(1), strategy, |(lines, edits)| {
        let text = match lines {
            Some(lines) => lines,
            None => mutate(example, &edits, tokens),
        };
        match bounded("config toml", || Config::from_toml(&text, path)) {
            Ok(config) => {
                prop_assert!(config.tick_seconds.is_finite() && config.tick_seconds > 0.0);
                prop_assert!(config.policy.reserved_cpus.iter().all(|cpu| cpu < MAX_CPUS));
            }
            Err(e) => prop_assert!(e.to_string().contains("fuzz.toml"), "{e}"),
        }
        Ok(())
    });
}

#[test]
fn fuzz_sysfs_trees() {
    fuzz("sysfs trees", cases(2), sysfs_tree::tree(), |tree| {
        let dir = sysfs_tree::TreeDir::write(&tree);
        if let Ok(topology) = bounded("sysfs tree", || {
            pinsight::topology::Topology::read(dir.path())
        }) {
            prop_assert!(!topology.cpus.is_empty());
            for cpu in topology.cpus.values() {
                prop_assert!(cpu.id < MAX_CPUS && topology.nodes.contains_key(&cpu.node));
                prop_assert!(
                    topology.possible_cpus.contains(cpu.id) && cpu.siblings.contains(cpu.id)
                );
            }
        }
        Ok(())
    });
}

// TODO(tracefs, BTF): probes::tracefs::parse_field_offset and the BTF reader sit in private
// modules on this branch (probes/** is being refactored elsewhere); their targets join here
// once they are public (see the report of branch h-fuzz).

/// Inputs no random strategy reaches: nesting deep enough to overflow a recursive parser's
/// stack (which aborts the process, so no catch_unwind would see it). toml refuses deep
/// nesting with an error; the XML readers cope.
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let path = Path::new("deep.toml");
    for depth in [100, 10_000, 100_000] {
        let arrays = format!("listen = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let tables = format!("listen = {}{}\n", "{ a = ".repeat(depth), "}".repeat(depth));
        for text in [arrays, tables] {
            let e = bounded("deep toml", || Config::from_toml(&text, path)).unwrap_err();
            assert!(e.to_string().contains("deep.toml"), "{e}");
        }
        let nested = format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth));
        // roxmltree builds its tree without recursion and pinsight reads only direct
        // children: deep nesting parses (or hits the node limit), it does not crash.
        let xml = domain_with_metadata(&nested);
        let _ = bounded("deep xml", || parse_domain_xml(&xml));
        let state = format!("<state>{nested}</state>");
        let _ = bounded("deep state", || Record::parse(&state));
    }
}
