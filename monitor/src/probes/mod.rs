//! Loads, attaches and reads pinsight's eBPF probes.
//!
//! *Prepare* (load and verify every program, size the maps) is separate from *attach*: a probe
//! whose attach point is missing is skipped with the reason, reported through
//! [`Probes::status`], and the others keep working.

pub mod bench;
mod btf;
mod counters;
mod tracefs;

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray, PerCpuHashMap};
use aya::programs::{BtfTracePoint, TracePoint};
use aya::{Btf, Ebpf, EbpfLoader};
use monitor_common::{globals, maps, programs, CpuRun, ExitKey};
use serde::Serialize;

pub use btf::BtfError;
pub use counters::bpf_stats_enabled;
pub use tracefs::TracefsError;

/// The daemon's probes, compiled by build.rs and embedded here.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Which tracepoint feeds the KVM exit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvmExitSource {
    /// kvm_exit where it fires (bare-metal VMX/SVM), else kvm_userspace_exit.
    #[default]
    Auto,
    /// Every hardware exit with its VMX/SVM reason.
    KvmExit,
    /// Exits that reach the VMM (IO, MMIO, ...); fires under nested KVM too.
    KvmUserspaceExit,
    /// No KVM exit probe.
    Off,
}

/// Sizes and choices for loading the probes.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// Capacity of the per-thread maps: the most vCPU threads tracked at once.
    pub max_threads: u32,
    /// Capacity of the (thread, exit reason) map.
    pub max_exit_keys: u32,
    /// KVM exit source.
    pub kvm_exit_source: KvmExitSource,
    /// Socket id of each CPU (CPUs absent here are "unknown" to the probes).
    pub cpu_sockets: BTreeMap<u32, u32>,
}

/// Errors loading or using the probes.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The kernel's BTF could not give us task_struct's layout.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// Loading the object (verifier, map creation) failed.
    #[error("loading the eBPF object failed: {0}")]
    Load(#[from] aya::EbpfError),
    /// A program failed to load or attach.
    #[error("program {program}: {source}")]
    Program {
        /// Program name.
        program: &'static str,
        /// aya's error.
        source: aya::programs::ProgramError,
    },
    /// A map operation failed.
    #[error("map {map}: {source}")]
    Map {
        /// Map name.
        map: &'static str,
        /// aya's error.
        source: aya::maps::MapError,
    },
    /// The object lacks something the daemon expects (a build mismatch).
    #[error("the embedded eBPF object has no {0}")]
    Missing(&'static str),
    /// The kernel has no such tracepoint (or tracefs is not mounted).
    #[error("tracepoint {0} not found in tracefs (is it mounted? does this kernel have it?)")]
    NoTracepoint(String),
    /// More vCPU threads than the maps hold.
    #[error("cannot track thread {tid}: {tracked} threads tracked, maps hold {capacity} (raise probes.max_threads)")]
    Full {
        /// The thread.
        tid: u32,
        /// Threads tracked now.
        tracked: usize,
        /// Map capacity.
        capacity: u32,
    },
}

/// Whether a probe is attached, and if not why.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeStatus {
    /// Attached and running.
    pub attached: bool,
    /// The attach point, or why it was skipped.
    pub detail: String,
}

/// Counters of one tracked thread, cumulative since it was tracked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ThreadCounters {
    /// On-CPU nanoseconds, indexed by CPU id (includes the stint in progress).
    pub run_ns_by_cpu: Vec<u64>,
    /// Moves between sockets.
    pub cross_socket_migrations: u64,
    /// KVM exits per reason code, each indexed by CPU id.
    pub exits: BTreeMap<u32, Vec<u64>>,
}

/// Run time and count of one program, from the kernel's bpf_stats.
#[derive(Debug, Clone, Serialize)]
pub struct ProgramStats {
    /// Program name.
    pub program: &'static str,
    /// Total run time in nanoseconds.
    pub run_time_ns: u64,
    /// Number of runs.
    pub run_count: u64,
}

/// Map fill level.
#[derive(Debug, Clone, Serialize)]
pub struct MapUsage {
    /// Map name.
    pub map: &'static str,
    /// Entries in use.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
}

/// The loaded probes and the maps the daemon reads and writes.
pub struct Probes {
    ebpf: Ebpf,
    tracked_tids: Array<MapData, u64>,
    run_ns: PerCpuArray<MapData, CpuRun>,
    kvm_exits: PerCpuHashMap<MapData, ExitKey, u64>,
    map_errors: PerCpuArray<MapData, u64>,
    status: BTreeMap<&'static str, ProbeStatus>,
    /// Our copy of the slot words (four 16-bit slots each), so tracking is one map write.
    words: StdHashMap<u32, u64>,
    tracked: BTreeSet<u32>,
    /// Run-array slot of each tracked thread (1..=max_threads; 0 means untracked).
    slots: StdHashMap<u32, u32>,
    free_slots: Vec<u32>,
    slot_words: u32,
    nr_cpus: usize,
    options: ProbeOptions,
    exit_source: Option<&'static str>,
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> ProbeError {
    move |source| ProbeError::Map { map, source }
}

fn prog_err(program: &'static str) -> impl Fn(aya::programs::ProgramError) -> ProbeError {
    move |source| ProbeError::Program { program, source }
}

impl Probes {
    /// Loads and verifies every program, then attaches what this kernel offers.
    /// Fails only when sched_switch, the probe everything else depends on, cannot run.
    pub fn load(options: ProbeOptions) -> Result<Probes, ProbeError> {
        let vmlinux = Path::new(VMLINUX_BTF);
        let pid_offset = btf::member_offset(vmlinux, "task_struct", "pid")?;
        let runtime_offset = btf::member_offset(vmlinux, "task_struct", "se")?
            + btf::member_offset(vmlinux, "sched_entity", "sum_exec_runtime")?;
        let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(1 << 22);
        let slot_words = pid_max.div_ceil(4);
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(_, e)| map_err(maps::RUN_NS)(aya::maps::MapError::IoError(e)))?;
        let offsets = tracepoint_offsets();
        let mut loader = EbpfLoader::new();
        loader
            .set_global(globals::TASK_PID_OFFSET, &pid_offset, true)
            .set_global(globals::TASK_RUNTIME_OFFSET, &runtime_offset, true)
            .set_max_entries(maps::TRACKED_TIDS, slot_words)
            .set_max_entries(maps::RUN_NS, options.max_threads + 1)
            .set_max_entries(maps::KVM_EXITS, options.max_exit_keys)
            .set_max_entries(maps::CPU_SOCKET, nr_cpus as u32);
        for (name, value) in &offsets {
            loader.set_global(name, value, true);
        }
        let mut ebpf = loader.load(PROBES_OBJECT)?;
        // aya-log forwards the probes' rare warnings (a full map) into our log; it reads them
        // on the tokio runtime, so it is only set up when there is one (not in plain tests).
        if tokio::runtime::Handle::try_current().is_ok() {
            if let Err(e) = aya_log::EbpfLogger::init(&mut ebpf) {
                tracing::debug!("probe logging unavailable: {e}");
            }
        }
        let take = |ebpf: &mut Ebpf, name: &'static str| {
            ebpf.take_map(name).ok_or(ProbeError::Missing(name))
        };
        let mut cpu_socket: Array<MapData, u32> =
            Array::try_from(take(&mut ebpf, maps::CPU_SOCKET)?)
                .map_err(map_err(maps::CPU_SOCKET))?;
        for cpu in 0..nr_cpus as u32 {
            let socket = options
                .cpu_sockets
                .get(&cpu)
                .copied()
                .unwrap_or(monitor_common::UNKNOWN_SOCKET);
            cpu_socket
                .set(cpu, socket, 0)
                .map_err(map_err(maps::CPU_SOCKET))?;
        }
        let mut probes = Probes {
            tracked_tids: Array::try_from(take(&mut ebpf, maps::TRACKED_TIDS)?)
                .map_err(map_err(maps::TRACKED_TIDS))?,
            run_ns: PerCpuArray::try_from(take(&mut ebpf, maps::RUN_NS)?)
                .map_err(map_err(maps::RUN_NS))?,
            kvm_exits: PerCpuHashMap::try_from(take(&mut ebpf, maps::KVM_EXITS)?)
                .map_err(map_err(maps::KVM_EXITS))?,
            map_errors: PerCpuArray::try_from(take(&mut ebpf, maps::MAP_ERRORS)?)
                .map_err(map_err(maps::MAP_ERRORS))?,
            ebpf,
            status: BTreeMap::new(),
            words: StdHashMap::new(),
            tracked: BTreeSet::new(),
            slots: StdHashMap::new(),
            // Handed out from the end, so slot 1 goes first.
            free_slots: (1..=options.max_threads).rev().collect(),
            slot_words,
            nr_cpus,
            options,
            exit_source: None,
        };
        probes.attach_sched()?;
        probes.attach_kvm();
        Ok(probes)
    }

    fn attach_btf(&mut self, program: &'static str, btf: &Btf) -> Result<(), ProbeError> {
        let prog: &mut BtfTracePoint = self
            .ebpf
            .program_mut(program)
            .ok_or(ProbeError::Missing(program))?
            .try_into()
            .map_err(prog_err(program))?;
        prog.load(program, btf).map_err(prog_err(program))?;
        prog.attach().map_err(prog_err(program))?;
        Ok(())
    }

    fn attach_sched(&mut self) -> Result<(), ProbeError> {
        let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Load(aya::EbpfError::BtfError(e)))?;
        // sched_switch is the probe the product is about: without it, fail loudly.
        self.attach_btf(programs::SCHED_SWITCH, &btf)?;
        self.set_status(programs::SCHED_SWITCH, true, "tp_btf/sched_switch".into());
        let migrate = self.attach_tracepoint("sched", programs::SCHED_MIGRATE_TASK);
        self.record_optional(
            programs::SCHED_MIGRATE_TASK,
            migrate,
            "tracepoint/sched/sched_migrate_task",
            "cross-socket migrations will not be counted",
        );
        let exit = self.attach_btf(programs::SCHED_PROCESS_EXIT, &btf);
        self.record_optional(
            programs::SCHED_PROCESS_EXIT,
            exit,
            "tp_btf/sched_process_exit",
            "exited vCPU threads are untracked at the next rescan instead",
        );
        Ok(())
    }

    /// Records an optional probe's attach result; a failure is a warning saying what is lost.
    fn record_optional(
        &mut self,
        probe: &'static str,
        result: Result<(), ProbeError>,
        attach_point: &str,
        without_it: &str,
    ) {
        match result {
            Ok(()) => self.set_status(probe, true, attach_point.into()),
            Err(e) => {
                tracing::warn!(error = %e, "{probe} probe skipped: {without_it}");
                self.set_status(probe, false, e.to_string());
            }
        }
    }

    fn attach_kvm(&mut self) {
        let wanted = self.options.kvm_exit_source;
        let vendor = kvm_vendor_module(Path::new("/sys/module"));
        let candidates = exit_source_candidates(wanted, vendor);
        tracing::info!(
            ?wanted,
            vendor = vendor.unwrap_or("none"),
            "KVM exit sources to try: {candidates:?}"
        );
        for name in [programs::KVM_EXIT, programs::KVM_USERSPACE_EXIT] {
            if !candidates.contains(&name) {
                let why = format!("not selected (kvm_exit_source = {wanted:?})");
                self.set_status(name, false, why);
            }
        }
        for &name in candidates {
            if self.exit_source.is_some() {
                self.set_status(
                    name,
                    false,
                    format!("{} is in use", self.exit_source.unwrap_or("")),
                );
                continue;
            }
            let result = self.attach_tracepoint("kvm", name);
            match result {
                Ok(()) => {
                    tracing::info!(source = name, "KVM exit probe attached to kvm:{name}");
                    self.exit_source = Some(name);
                    self.set_status(name, true, format!("tracepoint/kvm/{name}"));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "KVM exit probe kvm:{name} skipped");
                    self.set_status(name, false, e.to_string());
                }
            }
        }
        if self.exit_source.is_none() && wanted != KvmExitSource::Off {
            tracing::warn!("no KVM exit source attached: exit counts will be missing");
        }
    }

    fn attach_tracepoint(&mut self, category: &str, name: &'static str) -> Result<(), ProbeError> {
        if !tracefs::exists(category, name) {
            return Err(ProbeError::NoTracepoint(format!("{category}:{name}")));
        }
        let prog: &mut TracePoint = self
            .ebpf
            .program_mut(name)
            .ok_or(ProbeError::Missing(name))?
            .try_into()
            .map_err(prog_err(name))?;
        prog.load().map_err(prog_err(name))?;
        prog.attach(category, name).map_err(prog_err(name))?;
        Ok(())
    }

    fn set_status(&mut self, probe: &'static str, attached: bool, detail: String) {
        self.status.insert(probe, ProbeStatus { attached, detail });
    }

    /// Every probe with whether it is attached and why not.
    pub fn status(&self) -> &BTreeMap<&'static str, ProbeStatus> {
        &self.status
    }

    /// Name of the KVM exit source in use, if any.
    pub fn exit_source(&self) -> Option<&'static str> {
        self.exit_source
    }

    /// Number of possible CPUs (the length of per-CPU values).
    pub fn nr_cpus(&self) -> usize {
        self.nr_cpus
    }

    /// Threads tracked now.
    pub fn tracked(&self) -> &BTreeSet<u32> {
        &self.tracked
    }

    /// The loaded object (benchmarks read program stats from it).
    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }
}

/// The KVM vendor module loaded on this host, if any (kvm_intel, kvm_amd, kvm_pvm, ...).
pub fn kvm_vendor_module(module_dir: &Path) -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| module_dir.join(m).exists())
}

/// Which exit tracepoints to try, in order. kvm:kvm_exit exists on every x86 kernel but only
/// fires under hardware-assisted KVM (VMX/SVM); under other flavours (nested PVM) only exits
/// that reach the VMM are visible, through kvm:kvm_userspace_exit.
pub fn exit_source_candidates(
    wanted: KvmExitSource,
    vendor: Option<&str>,
) -> &'static [&'static str] {
    match wanted {
        KvmExitSource::Off => &[],
        KvmExitSource::KvmExit => &[programs::KVM_EXIT],
        KvmExitSource::KvmUserspaceExit => &[programs::KVM_USERSPACE_EXIT],
        KvmExitSource::Auto => match vendor {
            Some("kvm_intel" | "kvm_amd") => &[programs::KVM_EXIT, programs::KVM_USERSPACE_EXIT],
            _ => &[programs::KVM_USERSPACE_EXIT],
        },
    }
}

/// Record offsets for the classic tracepoints (sched_migrate_task, KVM exits), falling back to the compiled-in defaults (the
/// layout of every kernel since 5.x) when tracefs does not say.
fn tracepoint_offsets() -> Vec<(&'static str, u32)> {
    let fields = [
        (
            globals::MIGRATE_PID_OFFSET,
            "sched",
            "sched_migrate_task",
            "pid",
        ),
        (
            globals::MIGRATE_ORIG_CPU_OFFSET,
            "sched",
            "sched_migrate_task",
            "orig_cpu",
        ),
        (
            globals::MIGRATE_DEST_CPU_OFFSET,
            "sched",
            "sched_migrate_task",
            "dest_cpu",
        ),
        (
            globals::KVM_EXIT_REASON_OFFSET,
            "kvm",
            "kvm_exit",
            "exit_reason",
        ),
        (globals::KVM_EXIT_ISA_OFFSET, "kvm", "kvm_exit", "isa"),
        (
            globals::KVM_USERSPACE_EXIT_REASON_OFFSET,
            "kvm",
            "kvm_userspace_exit",
            "reason",
        ),
    ];

    fields
        .iter()
        .filter_map(|(global, category, event, field)| {
            tracefs::field_offset(category, event, field)
                .map(|offset| (*global, offset))
                .map_err(|e| tracing::debug!("{e}"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_kvm_exit_only_under_hardware_kvm() {
        let auto = KvmExitSource::Auto;
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_intel"))[0],
            programs::KVM_EXIT
        );
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_amd"))[0],
            programs::KVM_EXIT
        );
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_pvm")),
            &[programs::KVM_USERSPACE_EXIT]
        );
        assert_eq!(
            exit_source_candidates(auto, None),
            &[programs::KVM_USERSPACE_EXIT]
        );
        let forced = exit_source_candidates(KvmExitSource::KvmExit, Some("kvm_pvm"));
        assert_eq!(forced, &[programs::KVM_EXIT]);
        assert!(exit_source_candidates(KvmExitSource::Off, Some("kvm_intel")).is_empty());
    }

    #[test]
    fn this_host_has_a_kvm_vendor_module() {
        // The testbed runs nested PVM KVM; a bare-metal CI host would show kvm_intel/kvm_amd.
        assert!(
            kvm_vendor_module(Path::new("/sys/module")).is_some(),
            "no KVM module loaded"
        );
    }
}
