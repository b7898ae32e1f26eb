//! Fuzz targets for every parser of outside input, run by `cargo test` for a bounded number
//! of inputs each (PINSIGHT_FUZZ_CASES per target; see README "Fuzzing" for long runs).
//! Each input must parse without a panic, within 100 ms and 64 MiB; each target prints how
//! many inputs it executed.

#[path = "fuzz/deep_targets.rs"]
mod deep_targets;
#[path = "fuzz/engine.rs"]
mod engine;
#[path = "fuzz/qmp_replies.rs"]
mod qmp_replies;
#[path = "fuzz/sysfs_tree.rs"]
mod sysfs_tree;
#[path = "fuzz/xml_targets.rs"]
mod xml_targets;

use std::collections::BTreeSet;
use std::path::Path;

use engine::{bounded, cases, fuzz, mutate, mutations};
use pinsight::config::Config;
use pinsight::cpuset::{CpuSet, MAX_CPUS};
use pinsight::inventory::domain_xml::parse_domain_xml;
use pinsight::policy::record::Record;
use proptest::prelude::*;
use xml_targets::domain_with_metadata;

#[global_allocator]
static ALLOC: engine::CountingAlloc = engine::CountingAlloc;

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
        "max_other_threads",
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

/// A tracefs `format` file as the kernel writes it (kvm_userspace_exit on 6.x), the seed
/// when the host's own files cannot be read.
const FORMAT_SEED: &str = "name: kvm_userspace_exit\nID: 1234\nformat:\n\
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n\
\tfield:__u32 reason;\toffset:8;\tsize:4;\tsigned:0;\n\
\tfield:int errno;\toffset:12;\tsize:4;\tsigned:1;\n\n\
print fmt: \"reason %s (%d)\", REC->reason, REC->errno\n";

#[test]
fn fuzz_tracefs_format() {
    let mut seeds = vec![FORMAT_SEED.to_string()];
    for event in [
        "kvm/kvm_exit",
        "kvm/kvm_userspace_exit",
        "sched/sched_switch",
    ] {
        if let Ok(text) =
            std::fs::read_to_string(format!("/sys/kernel/tracing/events/{event}/format"))
        {
            seeds.push(text);
        }
    }
    let tokens = [
        "field:",
        ";",
        "offset:",
        "offset:4294967296;",
        "offset:-1;",
        "size:",
        "\t",
        "\n",
        "[",
        " ",
    ];
    let fields = prop::sample::select(vec!["reason", "errno", "exit_reason", "prev_pid", "", ";"]);
    let strategy = (0..seeds.len(), mutations(8), fields);
    fuzz(
        "tracefs format",
        cases(1),
        strategy,
        |(seed, edits, field)| {
            let text = mutate(&seeds[seed], &edits, &tokens);
            let offset = bounded("tracefs format", || {
                pinsight::probes::tracefs::parse_field_offset(&text, field)
            });
            // An offset is only read from a field line that names the field and says it.
            if let Some(offset) = offset {
                let said = text.lines().any(|l| {
                    l.contains("field:")
                        && l.contains(field)
                        && l.contains("offset:")
                        && l.contains(&offset.to_string())
                });
                prop_assert!(said, "offset {offset} of {field:?} in {text:?}");
            }
            Ok(())
        },
    );
}

/// The head of the running kernel's BTF with its header made to fit: a type section of a few
/// KiB and the string section's start, so lookups walk real types and names.
fn btf_seed() -> Vec<u8> {
    let Ok(full) = std::fs::read(pinsight::probes::VMLINUX_BTF) else {
        // magic, version 1, flags 0, hdr_len 24, empty type and string sections.
        let mut hdr = vec![0x9f, 0xeb, 1, 0, 24, 0, 0, 0];
        hdr.extend([0u8; 16]);
        return hdr;
    };
    let word = |at: usize| u32::from_le_bytes([full[at], full[at + 1], full[at + 2], full[at + 3]]);
    let (hdr_len, type_off, str_off) = (word(4) as usize, word(8) as usize, word(16) as usize);
    let (types, strings) = (4096usize, 4096usize);
    let mut seed = full[..hdr_len].to_vec();
    let put =
        |seed: &mut Vec<u8>, at: usize, v: u32| seed[at..at + 4].copy_from_slice(&v.to_le_bytes());
    put(&mut seed, 8, 0);
    put(&mut seed, 12, types as u32);
    put(&mut seed, 16, types as u32);
    put(&mut seed, 20, strings as u32);
    seed.extend_from_slice(&full[hdr_len + type_off..hdr_len + type_off + types]);
    seed.extend_from_slice(&full[hdr_len + str_off..hdr_len + str_off + strings]);
    seed
}

#[test]
fn fuzz_btf() {
    let seed = btf_seed();
    let tokens: [&[u8]; 4] = [&[0xff; 4], &[0; 4], &[0x9f, 0xeb], &[4, 0, 0, 4]];
    let members = prop::sample::select(vec![
        ("task_struct", "pid"),
        ("sched_entity", "sum_exec_runtime"),
        ("", ""),
    ]);
    fuzz(
        "btf",
        cases(1),
        (mutations(8), members),
        |(edits, (strukt, member))| {
            let bytes = engine::mutate_bytes(&seed, &edits, &tokens);
            let btf = pinsight::probes::btf::KernelBtf::from_bytes(Path::new("fuzz.btf"), bytes);
            if let Err(e) = bounded("btf", || btf.member_offset(strukt, member)) {
                prop_assert!(e.to_string().contains("fuzz.btf"), "{e}");
            }
            Ok(())
        },
    );
}

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
