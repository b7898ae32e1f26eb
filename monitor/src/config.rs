//! The daemon's configuration: one typed struct, defaults in code, unknown keys refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

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
        let config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
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
}
