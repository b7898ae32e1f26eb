//! The `pinsight` commands, one module each with its clap arguments beside it: `run` (the
//! daemon), `topology`, `status`, `top`, `check`, `plan`, `restore` and `calibrate`. What they share lives here:
//! how a configuration is resolved and a VM is found ([`host`]), the client of a running
//! daemon ([`client`]), the terminal renderers ([`render`]) and the one error type.
//!
//! `main.rs` only parses the arguments and calls a module's `execute`.

pub mod calibrate;
pub mod check;
pub mod client;
pub mod host;
pub mod logging;
pub mod plan;
pub mod plan_fixes;
pub mod render;
pub mod restore;
pub mod run;
pub mod status;
pub mod top;
pub mod topology;

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::inventory::LibvirtError;
use crate::remediate::RemediateError;
use crate::topology::TopologyError;

pub use client::{fetch_status, FetchError};

/// Why a command failed; every variant names the input at fault and, where there is one,
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The config file cannot be read, parsed or has a value out of range.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Another pinsight runs on this host (or the lock file is unusable).
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    /// A command-line flag set a value the configuration refuses.
    #[error("{flag} {value}: {reason}")]
    InvalidFlag {
        /// The flag ("--listen").
        flag: &'static str,
        /// The value given.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// A built-in default is out of range (a bug: the shipped defaults are tested valid).
    #[error("built-in default {key} = {value}: {reason} (please report this)")]
    InvalidDefault {
        /// The config key.
        key: &'static str,
        /// The default value.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The sysfs tree (or the fixture standing in for it) cannot be read.
    #[error("reading the host topology from {}: {source}", sysfs_root.display())]
    Topology {
        /// The sysfs root.
        sysfs_root: PathBuf,
        /// What is wrong, naming the file.
        source: TopologyError,
    },
    /// libvirt could not be reached or a domain could not be looked up.
    #[error(transparent)]
    Libvirt(#[from] LibvirtError),
    /// No running domain has the name given.
    #[error(
        "no running domain {name} in {uri} (running: {})",
        list_or_none(running)
    )]
    NoSuchVm {
        /// The name asked for.
        name: String,
        /// The libvirt connection searched.
        uri: String,
        /// The names that are running.
        running: Vec<String>,
    },
    /// A repin or restore could not be made (the error says what was rolled back).
    #[error(transparent)]
    Remediate(#[from] RemediateError),
    /// A memory or interrupt fix could not be made or undone.
    #[error(transparent)]
    Fix(#[from] crate::remediate::fix_record::FixError),
    /// Some recorded fixes could not be put back (they stay recorded for another try).
    #[error("domain {domain}: not restored: {failed}")]
    FixesNotRestored {
        /// Domain name.
        domain: String,
        /// What failed, in words.
        failed: String,
    },
    /// The daemon's /status.json could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// `--bpf-stats` could not switch on the kernel's BPF run-time statistics.
    #[error("--bpf-stats: cannot set kernel.bpf_stats_enabled ({BPF_STATS_SYSCTL}): {source}")]
    BpfStats {
        /// The write error (not root, or no such sysctl).
        source: std::io::Error,
    },
    /// A part of the daemon process could not be started.
    #[error("starting {what}: {source}")]
    Start {
        /// What ("the async runtime", "the engine thread", "the SIGTERM handler").
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
    /// The engine thread ended while the daemon was running.
    #[error("the engine thread ended ({reason}); see the log above")]
    EngineEnded {
        /// A panic's message, or that it returned.
        reason: String,
    },
    /// The HTTP endpoint could not be served.
    #[error("serving HTTP on {listen}: {source}")]
    Serve {
        /// The address.
        listen: std::net::SocketAddr,
        /// The error (address in use, say).
        source: std::io::Error,
    },
    /// The web-config file (`--web.config.file`) cannot be used.
    #[error(transparent)]
    WebConfig(#[from] crate::http::WebConfigError),
    /// The listen address cannot be bound (before anything else starts).
    #[error(transparent)]
    Bind(#[from] crate::http::BindError),
    /// The terminal could not be set up, read or drawn on (`pinsight top`).
    #[error("the terminal: {source} (pinsight top needs an interactive terminal)")]
    Terminal {
        /// The I/O error.
        source: std::io::Error,
    },
    /// `pinsight calibrate` could not measure a pair of nodes.
    #[error("calibrate: {0}")]
    Measure(#[from] crate::calibration::measure::MeasureError),
    /// The calibration file cannot be read or written.
    #[error(transparent)]
    Calibration(#[from] crate::calibration::CalibrationError),
    /// A report could not be turned into JSON (a bug).
    #[error("printing JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// The sysctl `--bpf-stats` writes.
pub const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// "a, b" or "none", for lists in messages.
fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// Prints `value` as pretty JSON on stdout.
fn print_json(value: &impl serde::Serialize) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
