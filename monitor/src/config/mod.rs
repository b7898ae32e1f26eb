//! The daemon's configuration: one typed struct, defaults in code, unknown keys refused.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::cpuset::CpuSet;

mod ranges;
use crate::probes::KvmExitSource;
pub use ranges::{Range, RANGES};

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
    /// Root of procfs for /proc/interrupts and /proc/irq (GPU interrupts); a fixture
    /// directory in tests, since no VFIO device exists there. Threads are always read from /proc.
    pub irq_proc_root: PathBuf,
    /// Root of the cgroup file systems (VM memory by node: memory.numa_stat, and
    /// hugetlb.<size>.numa_stat).
    pub cgroup_root: PathBuf,
    /// For a VM whose memory cgroup cannot be read: read its memory by node from
    /// /proc/PID/numa_maps at most this often (seconds; 0: never). The walk holds the VM's
    /// mmap lock (BENCHMARKS.md has its cost), so it is slow by design.
    pub numa_maps_fallback_seconds: f64,
    /// libvirt connection URI.
    pub libvirt_uri: String,
    /// Longest a libvirt call may take before libvirt counts as down and the connection is
    /// recycled (libvirt has no deadline of its own: a stopped libvirtd never answers).
    pub libvirt_timeout_seconds: f64,
    /// libvirt's QEMU state directory (NAME.pid files).
    pub qemu_run_dir: PathBuf,
    /// Seconds between readings of the probes' counters.
    pub tick_seconds: f64,
    /// Seconds between full libvirt rescans while libvirt's domain events arrive (they make
    /// a rescan at once when a VM starts or stops, its pins change, a device is hot-plugged
    /// or its metadata changes, so this one is a safety net). Without events, and for QMP
    /// sockets, which have none, at least once every [`EVENTLESS_RESCAN_SECONDS`] (see
    /// [`Config::eventless_rescan`]).
    pub rescan_seconds: f64,
    /// Seconds between readings of the slowly changing parts of the placement: each VM's
    /// memory by node and the GPUs' interrupt lines (a few file reads per VM). They are read
    /// at once when a new inventory comes too, and at most once a tick
    /// ([`Config::placement_read`]).
    pub placement_read_seconds: f64,
    /// Window of pinsight_domain_remote_ratio, in seconds.
    pub remote_ratio_window_seconds: f64,
    /// Fraction of performance assumed lost while the vCPUs run remote: the penalty of the
    /// overhead estimate's cpu part (the other parts' are in `overhead`).
    pub cross_socket_penalty: f64,
    /// Export per-vCPU series (switch off on hosts with very many vCPUs).
    pub per_vcpu_metrics: bool,
    /// Most VMs the per-VM metric families show; bounds /metrics whatever runs on the host.
    pub max_exported_vms: u32,
    /// Probe sizes and sources.
    pub probes: ProbesConfig,
    /// The repin policy: mode, thresholds and guard rails.
    pub policy: PolicyConfig,
    /// QEMU processes without libvirt, found through their QMP sockets.
    pub qmp: QmpConfig,
    /// Penalties of the overhead estimate's memory, interrupt and emulator parts.
    pub overhead: OverheadConfig,
    /// The file `pinsight calibrate` writes: node-to-node memory latency and bandwidth.
    pub calibration_file: PathBuf,
}

/// The share of performance assumed lost when all of a part is remote (README "Overhead
/// estimate" gives the sources).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OverheadConfig {
    /// The VM's resident memory on another socket than its GPUs.
    pub memory_penalty: f64,
    /// The GPUs' interrupt lines delivered off the GPU's node.
    pub irq_penalty: f64,
    /// The emulator's and IOThreads' run time on another socket than the GPUs.
    pub emulator_penalty: f64,
}

impl Default for OverheadConfig {
    fn default() -> Self {
        let p = crate::view::Penalties::default();
        OverheadConfig {
            memory_penalty: p.memory,
            irq_penalty: p.irq,
            emulator_penalty: p.emulator,
        }
    }
}

/// Longest time between rescans of a source that raises no events: libvirt while its domain
/// events are not connected, and the QMP sockets.
pub const EVENTLESS_RESCAN_SECONDS: f64 = 5.0;

impl Config {
    /// Time between periodic libvirt rescans: `rescan_seconds` while domain events arrive.
    pub fn rescan(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.rescan_seconds)
    }

    /// Time between rescans of a source without events: `rescan_seconds`, at most
    /// [`EVENTLESS_RESCAN_SECONDS`].
    pub fn eventless_rescan(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.rescan_seconds.min(EVENTLESS_RESCAN_SECONDS))
    }

    /// Time between readings of memory by node and GPU interrupts:
    /// `placement_read_seconds`, but never less than a tick.
    pub fn placement_read(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.placement_read_seconds.max(self.tick_seconds))
    }

    /// How often the numa_maps fallback may run, None when it is off.
    pub fn numa_maps_fallback(&self) -> Option<std::time::Duration> {
        (self.numa_maps_fallback_seconds > 0.0)
            .then(|| std::time::Duration::from_secs_f64(self.numa_maps_fallback_seconds))
    }

    /// The overhead estimate's penalties, cpu's from `cross_socket_penalty`.
    pub fn penalties(&self) -> crate::view::Penalties {
        crate::view::Penalties {
            cpu: self.cross_socket_penalty,
            memory: self.overhead.memory_penalty,
            irq: self.overhead.irq_penalty,
            emulator: self.overhead.emulator_penalty,
        }
    }
}

/// Where to find QEMU processes that libvirt does not manage, and what they cannot say.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QmpConfig {
    /// Globs of QMP unix sockets (`*` and `?` within one path component).
    pub sockets: Vec<String>,
    /// Longest one socket's whole conversation may take (connect, greeting, every query).
    pub timeout_seconds: f64,
    /// GPUs of VMs whose VMM cannot say (no vfio-pci it could report): a VM name, or the
    /// absolute path of a pid file holding the QEMU pid, -> PCI addresses.
    pub gpus: std::collections::BTreeMap<String, Vec<String>>,
    /// Directory of the state files in which enforce mode records what it did to these VMs
    /// (they have no libvirt metadata to keep it in): one `qmp-<UUID>.json` per VM.
    pub state_dir: PathBuf,
}

impl Default for QmpConfig {
    fn default() -> Self {
        QmpConfig {
            sockets: vec!["/run/qemu/*.qmp".into(), "/run/vc/vm/*/qmp.sock".into()],
            timeout_seconds: 2.0,
            gpus: Default::default(),
            state_dir: PathBuf::from("/var/lib/pinsight"),
        }
    }
}

/// Probe settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProbesConfig {
    /// Most vCPU threads tracked at once (sizes the per-thread maps, KVM exits included).
    pub max_threads: u32,
    /// Most other QEMU threads tracked at once: emulator, IOThreads and the rest, about 4
    /// per VM (run time and moves; no KVM exits).
    pub max_other_threads: u32,
    /// Retired and ignored: KVM exits are counted per tracked vCPU thread and a bounded set
    /// of reasons, sized by `max_threads`. Still accepted so older files load; `load` warns.
    pub max_exit_keys: Option<u32>,
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
    /// Move back a VM whose pins someone else changed after pinsight's last action (off:
    /// such a VM is reported as `skipped_operator` and left alone).
    pub reassert: bool,
    /// Moving a GPU VM's memory to its GPU's node: off | recommend | enforce (enforce acts
    /// only while `mode` is enforce too).
    pub memory: FixMode,
    /// Moving a GPU's misplaced interrupt lines to its node's CPUs: off | recommend | enforce
    /// (enforce acts only while `mode` is enforce too).
    pub irq: FixMode,
    /// A VM whose vCPUs sit by its GPU has its memory fix recommended once this share of its
    /// memory is off the GPU's node(s).
    pub memory_remote_high: f64,
    /// The host's budget for memory moves: a move of B bytes waits until the budget accrued
    /// since the last move (at this rate) covers B.
    pub memory_bytes_per_second: f64,
    /// Seconds after a memory or interrupt fix on a VM during which that VM gets no other fix
    /// of the same kind.
    pub fix_cooldown_seconds: f64,
}

/// What the policy does with a misplaced VM's memory or GPU interrupts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FixMode {
    /// Not evaluated.
    Off,
    /// Evaluated, logged, exported and shown by `pinsight plan`; nothing changed.
    #[default]
    Recommend,
    /// Applied, with its guard rails, when the daemon's `policy.mode` is enforce as well.
    Enforce,
}

impl FixMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FixMode::Off => "off",
            FixMode::Recommend => "recommend",
            FixMode::Enforce => "enforce",
        }
    }
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
            reassert: false,
            memory: FixMode::Recommend,
            irq: FixMode::Recommend,
            memory_remote_high: 0.5,
            memory_bytes_per_second: 268_435_456.0,
            fix_cooldown_seconds: 600.0,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([0, 0, 0, 0], 9812)),
            sysfs_root: PathBuf::from("/sys"),
            irq_proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            numa_maps_fallback_seconds: 0.0,
            libvirt_uri: "qemu:///system".into(),
            libvirt_timeout_seconds: 5.0,
            qemu_run_dir: PathBuf::from("/run/libvirt/qemu"),
            tick_seconds: 1.0,
            rescan_seconds: 30.0,
            placement_read_seconds: 5.0,
            remote_ratio_window_seconds: 60.0,
            cross_socket_penalty: 0.03,
            per_vcpu_metrics: true,
            max_exported_vms: 1000,
            probes: ProbesConfig::default(),
            policy: PolicyConfig::default(),
            qmp: QmpConfig::default(),
            overhead: OverheadConfig::default(),
            calibration_file: PathBuf::from("/var/lib/pinsight/calibration.json"),
        }
    }
}

impl Default for ProbesConfig {
    fn default() -> Self {
        ProbesConfig {
            max_threads: 1024,
            max_other_threads: 1024,
            max_exit_keys: None,
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
        if new.irq_proc_root != self.irq_proc_root {
            restart.push("irq_proc_root");
            applied.irq_proc_root = self.irq_proc_root.clone();
        }
        if new.cgroup_root != self.cgroup_root {
            restart.push("cgroup_root");
            applied.cgroup_root = self.cgroup_root.clone();
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

#[cfg(test)]
mod tests;
