//! Config files: ranges, the shipped example, reloads and errors that name the key.

use super::*;
use crate::test_support::config_file;
use std::path::Path;

/// The TOML line that sets `key` (`section.key` inside its section) to `value`.
fn set(key: &str, value: &str) -> String {
    match key.split_once('.') {
        Some((section, key)) => format!("[{section}]\n{key} = {value}\n"),
        None => format!("{key} = {value}\n"),
    }
}

#[test]
fn every_numeric_key_refuses_values_outside_its_range_naming_key_value_and_range() {
    for range in RANGES {
        let default = Config::default();
        assert!(
            range.contains(default.number(range.key)),
            "{}: the default is outside its own range",
            range.key
        );
        // Integer keys are u32 in TOML: values below 0 or above u32 fail to parse, which
        // is refused too (by serde, naming the key).
        let integer = range.key.contains("max_threads")
            || range.key.contains("max_other_threads")
            || range.key.contains("max_repins")
            || range.key.contains("max_exported_vms");
        let below = range.min
            - if integer {
                1.0
            } else {
                range.min.max(1e-3) * 0.5
            };
        let mut bad = vec![format!("{below}"), format!("{}", range.max * 2.0 + 1.0)];
        if !integer {
            bad.extend(["1e19", "nan", "inf", "-inf", "1e-6"].map(String::from));
        }
        for value in bad {
            if !integer && value == "1e-6" && range.min == 0.0 {
                continue;
            }
            let path = config_file(&set(range.key, &value));
            let err = Config::load(&path).unwrap_err().to_string();
            let key = range.key.rsplit('.').next().unwrap();
            assert!(err.contains(key), "{} = {value}: {err}", range.key);
            if !integer || value != "-1" {
                assert!(
                    err.contains(range.text) || err.contains("invalid value"),
                    "{} = {value}: {err}",
                    range.key
                );
            }
        }
        let ok = config_file(&set(range.key, &format_edge(range)));
        Config::load(&ok).unwrap_or_else(|e| panic!("{}: {e}", range.key));
    }
}

/// A value at the range's upper end that the other checks also accept.
fn format_edge(range: &Range) -> String {
    match range.key {
        // rescan must stay >= tick (1.0 by default) and the window >= tick.
        "tick_seconds" => "1.0".into(),
        "policy.remote_ratio_clear" => "0.5".into(),
        "remote_ratio_window_seconds" => "10000.0".into(),
        _ if range.max.fract() == 0.0 && !range.text.contains("fraction") => {
            format!("{}", range.max as u64)
        }
        _ => format!("{:?}", range.max),
    }
}

#[test]
fn the_shipped_example_states_every_range() {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/pinsight.toml"
    ))
    .unwrap();
    for range in RANGES {
        let key = range.key.rsplit('.').next().unwrap();
        let text = range.text.trim_start_matches("must be ");
        assert!(
            example.contains(&format!("# Range of {key}: {text}")),
            "deploy/pinsight.toml must say \"# Range of {key}: {text}\""
        );
    }
}

#[test]
fn keys_that_depend_on_each_other_are_checked_together() {
    for (text, named) in [
        (
            "tick_seconds = 2.0\nrescan_seconds = 1.0\n",
            "rescan_seconds = 1",
        ),
        (
            "tick_seconds = 0.05\nremote_ratio_window_seconds = 600.0\n",
            "at most 10000 ticks",
        ),
        (
            "remote_ratio_window_seconds = 0.5\n",
            "not be shorter than tick_seconds",
        ),
    ] {
        let path = config_file(text);
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(named), "{text}: {err}");
    }
}

#[test]
fn a_reload_applies_policy_and_timing_and_keeps_what_needs_a_restart() {
    let running = Config::default();
    let mut new = Config::default();
    new.policy.mode = Mode::Enforce;
    new.tick_seconds = 0.5;
    new.listen = "127.0.0.1:1".parse().unwrap();
    new.probes.max_threads = 8;
    let (applied, restart) = running.live_update(&new);
    assert_eq!(applied.policy.mode, Mode::Enforce);
    assert_eq!(applied.tick_seconds, 0.5);
    assert_eq!(applied.listen, running.listen);
    assert_eq!(applied.probes, running.probes);
    assert_eq!(restart, ["listen", "probes"]);
    assert_eq!(running.live_update(&running).1, Vec::<&str>::new());
}

#[test]
fn the_shipped_example_is_the_defaults() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/pinsight.toml");
    assert_eq!(Config::load(Path::new(example)).unwrap(), Config::default());
}

#[test]
fn unknown_keys_and_bad_values_are_named() {
    let path = config_file("listen = \"127.0.0.1:1\"\ntick_secs = 2\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("tick_secs") && err.contains(&path.display().to_string()),
        "{err}"
    );
    let path = config_file("cross_socket_penalty = 3.0\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("cross_socket_penalty = 3"), "{err}");
    let path = config_file("[probes]\nkvm_exit_source = \"kprobe\"\n");
    let err = Config::load(&path).unwrap_err().to_string();
    assert!(err.contains("kprobe"), "{err}");
    let err = Config::load(Path::new("/nonexistent/pinsight.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/pinsight.toml"), "{err}");
}

#[test]
fn policy_section_values_and_errors() {
    let path = config_file(
        "[policy]\nmode = \"enforce\"\nreserved_cpus = \"0-1,8\"\nmax_oversubscription = 2.5\n",
    );
    let config = Config::load(&path).unwrap();
    assert_eq!(config.policy.mode, Mode::Enforce);
    assert_eq!(config.policy.reserved_cpus.to_string(), "0-1,8");
    assert_eq!(config.policy.max_oversubscription, 2.5);
    let cases = [
        ("mode = \"auto\"", "auto"),
        ("reserved_cpus = \"0-x\"", "0-x"),
        (
            "remote_ratio_clear = 0.6",
            "policy.remote_ratio_clear = 0.6",
        ),
        ("remote_ratio_high = 1.5", "policy.remote_ratio_high = 1.5"),
        (
            "max_oversubscription = 0.5",
            "policy.max_oversubscription = 0.5",
        ),
        (
            "max_repins_per_minute = 0",
            "policy.max_repins_per_minute = 0",
        ),
        ("cooldown_seconds = -1.0", "policy.cooldown_seconds = -1"),
        ("cool_down = 1", "cool_down"),
    ];
    for (line, named) in &cases {
        let path = config_file(&format!("[policy]\n{line}\n"));
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(named), "{line}: {err}");
    }
}

#[test]
fn the_qmp_gpu_table_refuses_what_is_not_a_pci_address_naming_the_vm() {
    let ok = config_file("[qmp.gpus]\n\"train-7\" = [\"3b:00.0\"]\n\"/run/vc/vm/x/pid\" = []\n");
    let config = Config::load(&ok).unwrap();
    assert_eq!(config.qmp.gpus["train-7"], ["3b:00.0"]);
    let bad = config_file("[qmp.gpus]\n\"train-7\" = [\"gpu0\"]\n");
    let err = Config::load(&bad).unwrap_err().to_string();
    assert!(
        err.contains("qmp.gpus") && err.contains("train-7") && err.contains("\"gpu0\""),
        "{err}"
    );
    let err = Config::load(&config_file("[qmp]\nsocket = []\n"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("socket"), "{err}");
}
