//! The daemon's configuration: one typed struct, defaults in code, unknown keys refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::cpuset::CpuSet;
use crate::probes::KvmExitSource;

/// A config file that cannot be used, naming the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a wrongly typed value.
    #[error("config {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message (it names the key and line).
        reason: String,
    },
    /// A value out of its range.
    #[error("config {path}: {key} = {value}: {reason}")]
    Invalid {
        /// The file (or "defaults/flags").
        path: PathBuf,
        /// The key.
        key: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
}

/// Everything the daemon can be told; see deploy/pinsight.toml for the commented defaults.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the HTTP endpoint (/metrics, /, /status.json).
    pub listen: SocketAddr,
    /// Root of sysfs; a fixture directory describes another host's topology.
    pub sysfs_root: PathBuf,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// libvirt's QEMU state directory (NAME.pid files).
    pub qemu_run_dir: PathBuf,
    /// Seconds between readings of the probes' counters.
    pub tick_seconds: f64,
    /// Seconds between full libvirt rescans (VMs starting, stopping, changing pins).
    pub rescan_seconds: f64,
    /// Window of pinsight_domain_remote_ratio, in seconds.
    pub remote_ratio_window_seconds: f64,
    /// Fraction of performance assumed lost while running remote (estimate only).
    pub cross_socket_penalty: f64,
    /// Export per-vCPU series (switch off on hosts with very many vCPUs).
    pub per_vcpu_metrics: bool,
    /// Probe sizes and sources.
    pub probes: ProbesConfig,
    /// The repin policy: mode, thresholds and guard rails.
    pub policy: PolicyConfig,
}

/// Probe settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// Most vCPU threads tracked at once (sizes the per-thread maps).
    pub max_threads: u32,
    /// Most (thread, exit reason) pairs counted at once.
    pub max_exit_keys: u32,
    /// auto | kvm_exit | kvm_userspace_exit | off.
    pub kvm_exit_source: KvmExitSource,
}

/// What the policy loop does with a misplaced vCPU.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Metrics only; the policy is not evaluated.
    #[default]
    Observe,
    /// Evaluate, log and export what enforce would do; change nothing.
    Recommend,
    /// Evaluate and repin through libvirt.
    Enforce,
}

impl Mode {
    /// The config and command-line spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Recommend => "recommend",
            Mode::Enforce => "enforce",
        }
    }
}

/// Settings of the repin policy (see deploy/pinsight.toml).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// observe | recommend | enforce.
    pub mode: Mode,
    /// A vCPU whose remote share over the window reaches this is misplaced.
    pub remote_ratio_high: f64,
    /// ... and stays misplaced until its remote share falls to this (hysteresis).
    pub remote_ratio_clear: f64,
    /// Also repin a vCPU as soon as it may run on the far socket, before it has run there.
    pub proactive: bool,
    /// Seconds after an action on a VM during which that VM is not acted on again.
    pub cooldown_seconds: f64,
    /// Most VM repins per minute on the whole host.
    pub max_repins_per_minute: u32,
    /// CPUs pinsight never places vCPUs on (the host's own reserve).
    #[serde(deserialize_with = "cpu_list")]
    pub reserved_cpus: CpuSet,
    /// Most pinned vCPUs per host CPU after a repin (1.0: no oversubscription).
    pub max_oversubscription: f64,
    /// Place a VM's vCPUs on whole SMT cores where possible.
    pub keep_smt_cores: bool,
    /// Also write the new pins into the persistent domain definition.
    pub persistent: bool,
    /// Move VMs whose pins an orchestrator (Nova) set.
    pub move_orchestrated: bool,
    /// Move the QEMU emulator threads with the vCPUs.
    pub pin_emulator: bool,
    /// Only repin VMs whose operator metadata says `<policy repin="on"/>`.
    pub opt_in: bool,
}

/// Reads a CPU list ("0-1,8") from a TOML string.
fn cpu_list<'de, D: Deserializer<'de>>(d: D) -> Result<CpuSet, D::Error> {
    let text = String::deserialize(d)?;
    text.parse().map_err(serde::de::Error::custom)
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            mode: Mode::Observe,
            remote_ratio_high: 0.5,
            remote_ratio_clear: 0.2,
            proactive: true,
            cooldown_seconds: 300.0,
            max_repins_per_minute: 6,
            reserved_cpus: CpuSet::new(),
            max_oversubscription: 1.0,
            keep_smt_cores: true,
            persistent: false,
            move_orchestrated: false,
            pin_emulator: true,
            opt_in: false,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9812)),
            sysfs_root: PathBuf::from("/sys"),
            libvirt_uri: "qemu:///system".into(),
            qemu_run_dir: PathBuf::from("/run/libvirt/qemu"),
            tick_seconds: 1.0,
            rescan_seconds: 5.0,
            remote_ratio_window_seconds: 60.0,
            cross_socket_penalty: 0.03,
            per_vcpu_metrics: true,
            probes: ProbesConfig::default(),
            policy: PolicyConfig::default(),
        }
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            max_threads: 1024,
            max_exit_keys: 16384,
            kvm_exit_source: KvmExitSource::Auto,
        }
    }
}

impl Config {
    /// Reads and validates a TOML config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Parses and validates config text; `path` only names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            reason: e.to_string().trim().to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Checks every numeric key against its range ([`RANGES`]) and the keys against each
    /// other. `path` is where the values came from, for the error.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        };
        for range in RANGES {
            let value = self.number(range.key);
            if !range.contains(value) {
                return Err(invalid(range.key, value.to_string(), range.text));
            }
        }
        if self.rescan_seconds < self.tick_seconds {
            return Err(invalid(
                "rescan_seconds",
                self.rescan_seconds.to_string(),
                "must not be shorter than tick_seconds",
            ));
        }
        // The window keeps one reading per tick: bound how many.
        if self.remote_ratio_window_seconds / self.tick_seconds > MAX_WINDOW_TICKS {
            return Err(invalid(
                "remote_ratio_window_seconds",
                self.remote_ratio_window_seconds.to_string(),
                "must span at most 10000 ticks (tick_seconds)",
            ));
        }
        if self.remote_ratio_window_seconds < self.tick_seconds {
            return Err(invalid(
                "remote_ratio_window_seconds",
                self.remote_ratio_window_seconds.to_string(),
                "must not be shorter than tick_seconds",
            ));
        }
        let policy = &self.policy;
        if policy.remote_ratio_clear > policy.remote_ratio_high {
            return Err(invalid(
                "policy.remote_ratio_clear",
                policy.remote_ratio_clear.to_string(),
                "must not exceed policy.remote_ratio_high (the clear threshold is the lower one)",
            ));
        }
        Ok(())
    }

    /// What a reload (SIGHUP) applies of `new`: everything but the keys that only take
    /// effect at start (the endpoint, the sources, the probes' sizes), which keep their
    /// running values and are returned by name so the caller can say a restart is needed.
    pub fn live_update(&self, new: &Config) -> (Config, Vec<&'static str>) {
        let mut applied = new.clone();
        let mut restart = Vec::new();
        if new.listen != self.listen {
            restart.push("listen");
            applied.listen = self.listen;
        }
        if new.sysfs_root != self.sysfs_root {
            restart.push("sysfs_root");
            applied.sysfs_root = self.sysfs_root.clone();
        }
        if new.libvirt_uri != self.libvirt_uri {
            restart.push("libvirt_uri");
            applied.libvirt_uri = self.libvirt_uri.clone();
        }
        if new.qemu_run_dir != self.qemu_run_dir {
            restart.push("qemu_run_dir");
            applied.qemu_run_dir = self.qemu_run_dir.clone();
        }
        if new.probes != self.probes {
            restart.push("probes");
            applied.probes = self.probes.clone();
        }
        (applied, restart)
    }

    /// The value of the numeric key `key` (one of [`RANGES`]).
    fn number(&self, key: &str) -> f64 {
        let p = &self.policy;
        match key {
            "tick_seconds" => self.tick_seconds,
            "rescan_seconds" => self.rescan_seconds,
            "remote_ratio_window_seconds" => self.remote_ratio_window_seconds,
            "cross_socket_penalty" => self.cross_socket_penalty,
            "probes.max_threads" => f64::from(self.probes.max_threads),
            "probes.max_exit_keys" => f64::from(self.probes.max_exit_keys),
            "policy.remote_ratio_high" => p.remote_ratio_high,
            "policy.remote_ratio_clear" => p.remote_ratio_clear,
            "policy.cooldown_seconds" => p.cooldown_seconds,
            "policy.max_repins_per_minute" => f64::from(p.max_repins_per_minute),
            "policy.max_oversubscription" => p.max_oversubscription,
            // RANGES and this match list the same keys (a unit test checks it).
            _ => f64::NAN,
        }
    }
}

/// Most readings the remote-ratio window keeps (remote_ratio_window_seconds / tick_seconds).
const MAX_WINDOW_TICKS: f64 = 10_000.0;

/// The allowed range of one numeric key.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    /// The key, `section.key` inside a section.
    pub key: &'static str,
    /// Smallest allowed value.
    pub min: f64,
    /// Largest allowed value.
    pub max: f64,
    /// The range in words, as errors and deploy/pinsight.toml say it.
    pub text: &'static str,
}

impl Range {
    /// Whether `value` is a number within the range (NaN and infinities never are).
    pub fn contains(&self, value: f64) -> bool {
        value.is_finite() && (self.min..=self.max).contains(&value)
    }
}

/// Every numeric key's range. The bounds keep the daemon's arithmetic finite and its loops
/// calm whatever the file says: no tick so short it busy-loops, no duration so long that
/// time arithmetic overflows, no map larger than the kernel allows.
pub const RANGES: &[Range] = &[
    Range {
        key: "tick_seconds",
        min: 0.05,
        max: 60.0,
        text: "must be 0.05 to 60 seconds",
    },
    Range {
        key: "rescan_seconds",
        min: 0.05,
        max: 3600.0,
        text: "must be 0.05 to 3600 seconds",
    },
    Range {
        key: "remote_ratio_window_seconds",
        min: 0.05,
        max: 86400.0,
        text: "must be 0.05 to 86400 seconds",
    },
    Range {
        key: "cross_socket_penalty",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "probes.max_threads",
        min: 1.0,
        max: 65535.0,
        text: "must be 1 to 65535 (slots are 16-bit)",
    },
    Range {
        key: "probes.max_exit_keys",
        min: 1.0,
        max: 4_194_304.0,
        text: "must be 1 to 4194304",
    },
    Range {
        key: "policy.remote_ratio_high",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "policy.remote_ratio_clear",
        min: 0.0,
        max: 1.0,
        text: "must be a fraction from 0 to 1",
    },
    Range {
        key: "policy.cooldown_seconds",
        min: 0.0,
        max: 604_800.0,
        text: "must be 0 to 604800 seconds (a week)",
    },
    Range {
        key: "policy.max_repins_per_minute",
        min: 1.0,
        max: 600.0,
        text: "must be 1 to 600 (use mode = \"recommend\" to act on nothing)",
    },
    Range {
        key: "policy.max_oversubscription",
        min: 1.0,
        max: 64.0,
        text: "must be a ratio from 1.0 (one pinned vCPU per host CPU) to 64",
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!(
            "pinsight-config-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// The TOML line that sets `key` (`section.key` inside its section) to `value`.
    fn set(key: &str, value: &str) -> String {
        match key.split_once('.') {
            Some((section, key)) => format!("[{section}]\n{key} = {value}\n"),
            None => format!("{key} = {value}\n"),
        }
    }

    #[test]
    fn every_numeric_key_refuses_values_outside_its_range_naming_key_value_and_range() {
        for (i, range) in RANGES.iter().enumerate() {
            let default = Config::default();
            assert!(
                range.contains(default.number(range.key)),
                "{}: the default is outside its own range",
                range.key
            );
            // Integer keys are u32 in TOML: values below 0 or above u32 fail to parse, which
            // is refused too (by serde, naming the key).
            let integer = range.key.contains("max_threads")
                || range.key.contains("max_exit_keys")
                || range.key.contains("max_repins");
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
                let path = write(&format!("range-{i}"), &set(range.key, &value));
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
            let ok = write(
                &format!("range-ok-{i}"),
                &set(range.key, &format_edge(range)),
            );
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
            let path = write("together", text);
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
        let path = write("unknown", "listen = \"127.0.0.1:1\"\ntick_secs = 2\n");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("tick_secs") && err.contains(&path.display().to_string()),
            "{err}"
        );
        let path = write("penalty", "cross_socket_penalty = 3.0\n");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("cross_socket_penalty = 3"), "{err}");
        let path = write("source", "[probes]\nkvm_exit_source = \"kprobe\"\n");
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("kprobe"), "{err}");
        let err = Config::load(Path::new("/nonexistent/pinsight.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/pinsight.toml"), "{err}");
    }

    #[test]
    fn policy_section_values_and_errors() {
        let path = write(
            "policy-ok",
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
        for (i, (line, named)) in cases.iter().enumerate() {
            let path = write(&format!("policy-{i}"), &format!("[policy]\n{line}\n"));
            let err = Config::load(&path).unwrap_err().to_string();
            assert!(err.contains(named), "{line}: {err}");
        }
    }
}
