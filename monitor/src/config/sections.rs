//! The config file's sections: [policy] (with its modes), [probes], [qmp] and [overhead],
//! each with its defaults.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use crate::cpuset::CpuSet;
use crate::probes::KvmExitSource;

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
