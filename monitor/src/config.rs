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

    /// Checks ranges that serde cannot express.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        };
        let positive = [
            ("tick_seconds", self.tick_seconds),
            ("rescan_seconds", self.rescan_seconds),
            (
                "remote_ratio_window_seconds",
                self.remote_ratio_window_seconds,
            ),
        ];
        for (key, value) in positive {
            if !(value.is_finite() && value > 0.0) {
                return Err(invalid(
                    key,
                    value.to_string(),
                    "must be a positive number of seconds",
                ));
            }
        }
        if self.rescan_seconds < self.tick_seconds {
            return Err(invalid(
                "rescan_seconds",
                self.rescan_seconds.to_string(),
                "must not be shorter than tick_seconds",
            ));
        }
        if !(0.0..=1.0).contains(&self.cross_socket_penalty) {
            return Err(invalid(
                "cross_socket_penalty",
                self.cross_socket_penalty.to_string(),
                "must be a fraction between 0 and 1",
            ));
        }
        if self.probes.max_threads == 0 || self.probes.max_threads > 65535 {
            return Err(invalid(
                "probes.max_threads",
                self.probes.max_threads.to_string(),
                "must be between 1 and 65535 (slots are 16-bit)",
            ));
        }
        if self.probes.max_exit_keys == 0 || self.probes.max_exit_keys > 1 << 22 {
            return Err(invalid(
                "probes.max_exit_keys",
                self.probes.max_exit_keys.to_string(),
                "must be between 1 and 4194304",
            ));
        }
        self.policy.validate(path)
    }
}

impl PolicyConfig {
    /// Checks the policy's ranges; errors name the key as `policy.<key>`.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key, value: String, reason| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value,
            reason,
        };
        for (key, value) in [
            ("policy.remote_ratio_high", self.remote_ratio_high),
            ("policy.remote_ratio_clear", self.remote_ratio_clear),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(invalid(
                    key,
                    value.to_string(),
                    "must be a fraction between 0 and 1",
                ));
            }
        }
        if self.remote_ratio_clear > self.remote_ratio_high {
            return Err(invalid(
                "policy.remote_ratio_clear",
                self.remote_ratio_clear.to_string(),
                "must not exceed policy.remote_ratio_high (the clear threshold is the lower one)",
            ));
        }
        if !(self.cooldown_seconds.is_finite() && self.cooldown_seconds >= 0.0) {
            return Err(invalid(
                "policy.cooldown_seconds",
                self.cooldown_seconds.to_string(),
                "must be zero or a positive number of seconds",
            ));
        }
        if self.max_repins_per_minute == 0 {
            return Err(invalid(
                "policy.max_repins_per_minute",
                "0".into(),
                "must be at least 1 (use mode = \"recommend\" to act on nothing)",
            ));
        }
        if !(self.max_oversubscription.is_finite() && self.max_oversubscription >= 1.0) {
            return Err(invalid(
                "policy.max_oversubscription",
                self.max_oversubscription.to_string(),
                "must be a ratio of at least 1.0 (1.0: one pinned vCPU per host CPU)",
            ));
        }
        Ok(())
    }
}

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
