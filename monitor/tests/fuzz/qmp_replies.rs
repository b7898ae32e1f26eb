//! Fuzz target: QMP reply lines (the greeting, replies, events) as a socket that speaks
//! garbage or a broken QEMU might send them, mutated from real transcripts captured from
//! this machine's QEMU (tests/fixtures/qmp).

use pinsight::inventory::qmp::reply::{
    decode, parse_greeting, parse_message, CpuInfoFast, Message, NameInfo, QomProperty, UuidInfo,
};
use proptest::prelude::*;

use super::engine::{bounded, cases, fuzz, mutate, mutations};

/// Every line received in the captured transcripts.
fn seeds() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/qmp");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).expect("the QMP fixtures").flatten() {
        let text = std::fs::read_to_string(entry.path()).expect("a QMP transcript");
        lines.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("< "))
                .map(String::from),
        );
    }
    lines.sort();
    lines
}

#[test]
fn fuzz_qmp_replies() {
    let seeds = seeds();
    assert!(seeds.len() >= 10, "too few QMP seed lines: {}", seeds.len());
    let tokens = &[
        "{",
        "}",
        "[",
        "]",
        "\"",
        ":",
        ",",
        "null",
        "-1",
        "1e999",
        "4294967296",
        "\"return\"",
        "\"error\"",
        "\"event\"",
        "\"QMP\"",
        "\"thread-id\"",
        "\"cpu-index\"",
        "\\u0000",
        "\n",
    ];
    let strategy = (0..seeds.len(), mutations(6));
    fuzz("qmp replies", cases(1), strategy, |(seed, edits)| {
        let line = mutate(&seeds[seed], &edits, tokens);
        let _ = bounded("qmp greeting", || parse_greeting(&line));
        match bounded("qmp reply", || parse_message(&line, "query-cpus-fast")) {
            Ok(Message::Return(value)) => {
                // Every shape pinsight reads must decode or refuse, never panic.
                let _ = decode::<NameInfo>(value.clone(), "name");
                let _ = decode::<UuidInfo>(value.clone(), "uuid");
                let _ = decode::<Vec<QomProperty>>(value.clone(), "qom-list");
                let _ = decode::<Vec<CpuInfoFast>>(value, "cpus");
            }
            Ok(Message::Event(_)) => {}
            // The error shows only the start of the line, however long it is.
            Err(e) => prop_assert!(e.to_string().len() < 600, "{e}"),
        }
        Ok(())
    });
}
