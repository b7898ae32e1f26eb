//! The daemon's configuration: one typed struct, defaults in code, unknown keys refused.
//! The struct and its derived durations are here; its sections ([policy], [probes], [qmp],
//! [overhead]) in `sections`; reading and checking a file in `load`; the numeric ranges in
//! `ranges`.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

mod load;
mod ranges;
mod sections;
pub use load::ConfigError;
pub use ranges::{Range, RANGES};
pub use sections::{FixMode, Mode, OverheadConfig, PolicyConfig, ProbesConfig, QmpConfig};

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
    /// /proc/PID/numa_maps at most this often (seconds; 0: never); and for a VM whose
    /// hugetlb pages no hugetlb cgroup counts, their nodes from the same walk. The walk holds
    /// the VM's mmap lock (BENCHMARKS.md has its cost), so it is slow by design.
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

#[cfg(test)]
mod tests;
