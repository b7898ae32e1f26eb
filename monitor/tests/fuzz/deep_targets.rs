//! Structured targets: inputs built to get past the first checks, so the deep code runs.
//! - BTF: a valid header and string section, and a type section generated type by type
//!   (every kind, vlen, kind_flag, members named like the ones the probes look up), checked
//!   against a model of the lookup; then sometimes a few byte mutations on top.
//! - web-config: the exporter-toolkit YAML built key by key (TLS, users, headers, unknown
//!   keys, YAML anchors and tags), then sometimes mutated.

use std::cell::Cell;
use std::path::Path;

use pinsight::http::WebConfig;
use pinsight::probes::btf::KernelBtf;
use proptest::prelude::*;

use crate::engine::{bounded, cases, fuzz, mutate, mutations};

/// Names in the string section: the ones looked up, near misses, and the empty name.
const NAMES: &[&str] = &[
    "",
    "task_struct",
    "pid",
    "se",
    "sched_entity",
    "sum_exec_runtime",
    "task_struc",
    "pidx",
    "int",
];

/// One generated type record.
#[derive(Debug, Clone)]
struct Type {
    name: usize,
    /// 0..=20: every kind the reader knows, and unknown ones.
    kind: u32,
    kind_flag: bool,
    /// Members of a STRUCT/UNION: (name, bit offset word).
    members: Vec<(usize, u32)>,
    /// vlen for the other kinds with trailing data.
    vlen: u16,
}

/// A name index, mostly one of the names looked up (1..=5), so lookups find structs.
fn name_index() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..6, 1 => 0..NAMES.len()]
}

fn btf_type() -> impl Strategy<Value = Type> {
    // Mostly whole bytes (the offsets the probes can use), then bitfields and garbage.
    let offset =
        prop_oneof![4 => (0u32..256).prop_map(|b| b * 8), 1 => 0u32..2048, 1 => any::<u32>()];
    let member = (name_index(), offset);
    (
        name_index(),
        prop_oneof![16 => Just(4u32), 8 => 0u32..20, 1 => 20u32..32],
        any::<bool>(),
        prop::collection::vec(member, 0..6),
        0u16..4,
    )
        .prop_map(|(name, kind, kind_flag, members, vlen)| Type {
            name,
            kind,
            kind_flag,
            members,
            vlen,
        })
}

/// The string section and each name's offset in it.
fn strings() -> (Vec<u8>, Vec<u32>) {
    let mut section = vec![0u8];
    let mut offsets = vec![0];
    for name in &NAMES[1..] {
        offsets.push(section.len() as u32);
        section.extend(name.as_bytes());
        section.push(0);
    }
    (section, offsets)
}

/// Bytes of trailing data the reader skips for `kind` with `vlen`; None for unknown kinds.
fn trailing(kind: u32, vlen: usize) -> Option<usize> {
    match kind {
        1 | 14 | 17 => Some(4),
        3 => Some(12),
        4 | 5 | 15 | 19 => Some(vlen * 12),
        6 | 13 => Some(vlen * 8),
        0 | 2 | 7..=12 | 16 | 18 => Some(0),
        _ => None,
    }
}

/// The blob, and what looking up `strukt.member` must give: the first STRUCT named `strukt`
/// with a member named `member`, walking in order, an error at the first unknown kind.
fn build(types: &[Type], strukt: &str, member: &str) -> (Vec<u8>, Result<Option<u32>, ()>) {
    let (strs, offsets) = strings();
    let mut section = Vec::new();
    let mut put = |v: u32| section.extend(v.to_le_bytes());
    let mut expected: Option<Result<Option<u32>, ()>> = None;
    for t in types {
        let is_members = matches!(t.kind, 4 | 5);
        let vlen = if is_members {
            t.members.len()
        } else {
            usize::from(t.vlen)
        };
        let info = (u32::from(t.kind_flag) << 31) | (t.kind << 24) | vlen as u32;
        put(offsets[t.name]);
        put(info);
        put(8); // size or type
        let Some(bytes) = trailing(t.kind, vlen) else {
            expected.get_or_insert(Err(()));
            continue;
        };
        if is_members {
            for &(name, offset) in &t.members {
                put(offsets[name]);
                put(1);
                put(offset);
            }
            if t.kind == 4 && NAMES[t.name] == strukt && expected.is_none() {
                if let Some(&(_, word)) = t.members.iter().find(|m| NAMES[m.0] == member) {
                    let (bits, size) = if t.kind_flag {
                        (word & 0xff_ffff, word >> 24)
                    } else {
                        (word, 0)
                    };
                    let usable = size == 0 && bits % 8 == 0;
                    expected = Some(Ok(usable.then_some(bits / 8)));
                }
            }
        } else {
            (0..bytes / 4).for_each(|_| put(0));
        }
    }
    let mut blob = Vec::new();
    blob.extend(0xeb9fu16.to_le_bytes());
    blob.extend([1u8, 0]);
    let type_len = section.len() as u32;
    for v in [24, 0, type_len, type_len, strs.len() as u32] {
        blob.extend(v.to_le_bytes());
    }
    blob.extend(section);
    blob.extend(strs);
    (blob, expected.unwrap_or(Ok(None)))
}

#[test]
fn fuzz_btf_structured() {
    let found = Cell::new(0u64);
    let lookups = prop::sample::select(vec![
        ("task_struct", "pid"),
        ("task_struct", "se"),
        ("sched_entity", "sum_exec_runtime"),
    ]);
    let mutated = prop_oneof![4 => Just(Vec::new()), 1 => mutations(4)];
    fuzz(
        "btf structured",
        cases(1),
        (prop::collection::vec(btf_type(), 0..24), lookups, mutated),
        |(types, (strukt, member), edits)| {
            let (blob, expected) = build(&types, strukt, member);
            let tokens: [&[u8]; 3] = [&[0xff; 4], &[0; 4], &[4, 0, 0, 0x84]];
            let blob = crate::engine::mutate_bytes(&blob, &edits, &tokens);
            let btf = KernelBtf::from_bytes(Path::new("fuzz.btf"), blob);
            let got = bounded("btf structured", || btf.member_offset(strukt, member));
            if !edits.is_empty() {
                return Ok(());
            }
            match (&got, expected) {
                (Ok(offset), Ok(Some(want))) => {
                    found.set(found.get() + 1);
                    prop_assert_eq!(*offset, want);
                }
                (Err(e), Ok(None)) => prop_assert!(e.to_string().contains("fuzz.btf"), "{e}"),
                (Err(e), Err(())) => prop_assert!(e.to_string().contains("malformed"), "{e}"),
                (got, want) => prop_assert!(false, "got {got:?}, the model says {want:?}"),
            }
            Ok(())
        },
    );
    println!(
        "fuzz btf structured: {} lookups found the member at the model's offset",
        found.get()
    );
    assert!(found.get() > 0, "no input reached a found member");
}

/// The web-config's YAML, key by key: valid values, odd ones and unknown keys.
fn web_config_text() -> impl Strategy<Value = String> {
    let files = prop_oneof![
        3 => Just("  cert_file: tls.crt\n  key_file: tls.key"),
        1 => Just("  cert_file: tls.crt\n  key_file: tls.crt"),
        1 => Just(""),
    ];
    let tls = prop::collection::vec(
        prop::sample::select(vec![
            "  cert_file: tls.crt",
            "  key_file: tls.key",
            "  cert_file: /nonexistent/tls.crt",
            "  client_ca_file: ca.crt",
            "  client_auth_type: RequireAndVerifyClientCert",
            "  client_auth_type: NoClientCert",
            "  client_auth_type: x",
            "  min_version: TLS13",
            "  min_version: TLS10",
            "  max_version: TLS12",
            "  cipher_suites: [TLS_AES_128_GCM_SHA256]",
            "  unknown: 1",
        ]),
        0..3,
    );
    let users = prop::collection::vec(
        prop::sample::select(vec![
            "  prometheus: '$2b$10$eoSuSHs3WtfX4XXmka.CZO6U0u7u4PrFvErqXV6rkYRUm9MP.ILCa'",
            "  a: '$2y$04$abcdefghijklmnopqrstuu5Ccr9DH2wnq4I0qjsZyQzvHL0vbMpe'",
            "  b: plain-text",
            "  c: '$2b$99$x'",
            "  '': ''",
            "  d: [1, 2]",
        ]),
        0..4,
    );
    let headers = prop::collection::vec(
        prop::sample::select(vec![
            "    X-Frame-Options: deny",
            "    X-Frame-Options: allow",
            "    Strict-Transport-Security: max-age=1",
            "    Set-Cookie: x",
            "    X-Content-Type-Options: nosniff",
        ]),
        0..4,
    );
    let tail = prop_oneof![
        6 => Just(""),
        1 => Just("rate_limit:\n  interval: 1s\n"),
        1 => Just("x: &a [*a]\n"),
    ];
    (
        (any::<bool>(), files, tls),
        users,
        headers,
        any::<Option<bool>>(),
        tail,
    )
        .prop_map(|((with_tls, files, tls), users, headers, http2, tail)| {
            let mut text = String::new();
            if with_tls {
                text += &format!("tls_server_config:\n{files}\n");
                for line in tls {
                    text += line;
                    text += "\n";
                }
            }
            if !users.is_empty() {
                text += &format!("basic_auth_users:\n{}\n", users.join("\n"));
            }
            text += "http_server_config:\n";
            if let Some(h2) = http2 {
                text += &format!("  http2: {h2}\n");
            }
            if !headers.is_empty() {
                text += &format!("  headers:\n{}\n", headers.join("\n"));
            }
            text + tail
        })
}

/// A directory with a fresh self-signed ECDSA certificate (tls.crt, also ca.crt) and its
/// key (tls.key), so the TLS section's files load and the rustls config is built.
fn tls_files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-subj", "/CN=fuzz", "-days", "1"])
        .args(["-keyout", "tls.key", "-out", "tls.crt"])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (the web_tls test needs it too)");
    assert!(status.success(), "openssl req failed");
    std::fs::copy(dir.path().join("tls.crt"), dir.path().join("ca.crt")).expect("ca.crt");
    dir
}

#[test]
fn fuzz_web_config() {
    let tokens = &[
        ": ",
        "\n",
        "- ",
        "&a ",
        "*a",
        "!!binary ",
        "{",
        "}",
        "[",
        "]",
        "'",
        "\"",
        "~",
        "<<: *a",
        "\t",
        "#",
    ];
    let accepted = Cell::new(0u64);
    let dir = tls_files();
    let dir = dir.path();
    fuzz(
        "web config",
        cases(1),
        (
            web_config_text(),
            prop_oneof![Just(Vec::new()), mutations(6)],
        ),
        |(text, edits)| {
            let text = mutate(&text, &edits, tokens);
            // Relative file names land in the directory with the test's certificate and key.
            let path = dir.join("web-config.yml");
            let path = path.as_path();
            match bounded("web config", || WebConfig::parse(path, &text)) {
                Ok(_) => accepted.set(accepted.get() + 1),
                Err(e) => prop_assert!(
                    e.to_string().contains("web-config.yml"),
                    "the error does not name the file: {e}"
                ),
            }
            Ok(())
        },
    );
    println!("fuzz web config: {} inputs accepted", accepted.get());
}
