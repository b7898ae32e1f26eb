//! Reading a config file: parse the TOML, check every value against its range and the
//! others, and name the file, key and value when one is refused.

use std::path::{Path, PathBuf};

use super::{Config, RANGES};

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
        if config.probes.max_exit_keys.is_some() {
            tracing::warn!(
                config = %path.display(),
                "probes.max_exit_keys is retired and ignored: KVM exits are counted per tracked \
                 vCPU thread (probes.max_threads) and a bounded set of reasons; remove the line"
            );
        }
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
        for (vm, addresses) in &self.qmp.gpus {
            if vm.trim().is_empty() {
                return Err(invalid(
                    "qmp.gpus",
                    format!("{vm:?}"),
                    "a key must be a VM name or the absolute path of a pid file",
                ));
            }
            if let Some(bad) = addresses
                .iter()
                .find(|a| crate::topology::normalize_pci_address(a).is_none())
            {
                return Err(invalid(
                    "qmp.gpus",
                    format!("{vm} = {bad:?}"),
                    "is not a PCI address (such as \"0000:3b:00.0\")",
                ));
            }
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

    /// The value of the numeric key `key` (one of [`RANGES`]).
    pub(super) fn number(&self, key: &str) -> f64 {
        let p = &self.policy;
        match key {
            "tick_seconds" => self.tick_seconds,
            "numa_maps_fallback_seconds" => self.numa_maps_fallback_seconds,
            "rescan_seconds" => self.rescan_seconds,
            "placement_read_seconds" => self.placement_read_seconds,
            "libvirt_timeout_seconds" => self.libvirt_timeout_seconds,
            "remote_ratio_window_seconds" => self.remote_ratio_window_seconds,
            "cross_socket_penalty" => self.cross_socket_penalty,
            "overhead.memory_penalty" => self.overhead.memory_penalty,
            "overhead.irq_penalty" => self.overhead.irq_penalty,
            "overhead.emulator_penalty" => self.overhead.emulator_penalty,
            "max_exported_vms" => f64::from(self.max_exported_vms),
            "qmp.timeout_seconds" => self.qmp.timeout_seconds,
            "probes.max_threads" => f64::from(self.probes.max_threads),
            "probes.max_other_threads" => f64::from(self.probes.max_other_threads),
            "policy.remote_ratio_high" => p.remote_ratio_high,
            "policy.remote_ratio_clear" => p.remote_ratio_clear,
            "policy.cooldown_seconds" => p.cooldown_seconds,
            "policy.max_repins_per_minute" => f64::from(p.max_repins_per_minute),
            "policy.max_oversubscription" => p.max_oversubscription,
            "policy.memory_remote_high" => p.memory_remote_high,
            "policy.memory_bytes_per_second" => p.memory_bytes_per_second,
            "policy.fix_cooldown_seconds" => p.fix_cooldown_seconds,
            // RANGES and this match list the same keys (a unit test checks it).
            _ => f64::NAN,
        }
    }
}

/// Most readings the remote-ratio window keeps (remote_ratio_window_seconds / tick_seconds).
const MAX_WINDOW_TICKS: f64 = 10_000.0;
