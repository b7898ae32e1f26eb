//! Loads, attaches and reads pinsight's eBPF probes.
//!
//! One file per probe, named like its program (`sched_switch.rs`, `sched_process_exit.rs`,
//! `sched_migrate_task.rs`, `kvm_exit.rs` for the two KVM exit sources), each owning its
//! attach point, the offsets it needs and what is lost without it; the kernel side is
//! `monitor-ebpf/src/<probe>.rs`, the shared types `monitor-common/src/<probe>.rs`.
//!
//! Two stages: [`Probes::prepare`] sizes the maps, loads the object and loads every program
//! (the verifier checks each one); [`Probes::attach`] then attaches them. A probe whose load
//! or attach point fails is skipped with the reason, reported through [`Probes::status`] (and
//! so `pinsight_probe_attached{probe=...} 0`), and the others keep working; only sched_switch
//! is required. [`Probes::load`] is both.

mod batch;
pub mod btf;
pub mod cgroup_depth;
mod counters;
mod depth_filter;
mod error;
pub mod exit_reasons;
mod hook;
mod kvm_exit;
mod sched_migrate_task;
mod sched_process_exit;
mod sched_switch;
pub mod tracefs;
mod tracking;

use std::collections::{BTreeMap, BTreeSet, HashMap as StdHashMap};
use std::path::Path;

use aya::maps::{Array, MapData, PerCpuArray};
use aya::{Btf, Ebpf, EbpfLoader};
use monitor_common::kvm_exit::{ExitCounts, KVM_EXITS};
use monitor_common::sched_migrate_task::{CpuTopo, CPU_TOPO, TASK_CPU_OFFSET};
use monitor_common::sched_switch::{CpuRun, ThreadRun, RUN_NS, THREAD_RUN};
use monitor_common::tracked::{self, MAP_ERRORS, TRACKED_TIDS};
use serde::Serialize;

pub use btf::BtfError;
pub use counters::bpf_stats_enabled;
pub use error::ProbeError;
pub use kvm_exit::{exit_source_candidates, kvm_vendor_module, KvmExitSource};
pub use sched_migrate_task::Moves;

/// The depth filter in front of the thread table, as [`Probes::depth_filter`] reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthFilterState {
    /// The word in the kernel: bit `d` lets threads at cgroup depth `d` through
    /// (`monitor_common::sched_switch::TRACKED_DEPTHS`); all ones while open.
    pub word: u64,
    /// Whether it can close on this host (`se.depth` in BTF, cgroup_attach_task attached).
    pub may_close: bool,
    /// Tracked threads found running unseen by sched_switch since the daemon started.
    pub threads_ran_unseen: u64,
}
pub use tracefs::TracefsError;

use error::map_err;
use hook::Probe;

/// The daemon's probes, compiled by build.rs and embedded here.
static PROBES_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/monitor"));

/// The running kernel's BTF: task_struct's layout, and the types tp_btf programs load against.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Sizes the thread table for every possible thread id.
const PID_MAX: &str = "/proc/sys/kernel/pid_max";

/// The embedded eBPF object (every program, including the benchmark's `sched_switch_empty`),
/// 8-byte aligned as aya's loader wants it.
pub fn embedded_object() -> &'static [u8] {
    PROBES_OBJECT
}

/// The task_struct offsets the tp_btf programs read (`pid`, `se.sum_exec_runtime`,
/// `se.depth`), as (global name, value) from this kernel's BTF: what [`Probes::prepare`] sets,
/// for benchmarks that load other builds' objects the same way.
pub fn task_globals(btf: &btf::KernelBtf) -> Result<Vec<(&'static str, u32)>, BtfError> {
    Ok(sched_switch::task_layout(btf)?.globals)
}

/// Sizes and choices for loading the probes.
#[derive(Debug, Clone)]
pub struct ProbeOptions {
    /// The most vCPU threads tracked at once: slots 1..=max_threads, the only ones with KVM
    /// exit counters (a bounded set of reasons each).
    pub max_threads: u32,
    /// The most other QEMU threads (emulator, IOThreads, the rest) tracked at once: the slots
    /// after the vCPUs', with run time and moves but no exit counters. The sum with
    /// `max_threads` stays below 65536 (16-bit slots).
    pub max_other_threads: u32,
    /// KVM exit source.
    pub kvm_exit_source: KvmExitSource,
    /// Where each CPU sits (`Topology::cpu_topo`); CPUs absent here are "unknown" to the
    /// probes.
    pub cpu_topo: BTreeMap<u32, CpuTopo>,
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
    /// Moves from CPU to CPU, by scope.
    pub moves: Moves,
    /// KVM exits per reason code, each indexed by CPU id. The probes count per reason
    /// label (`exit_reasons`), so each reason comes under one code of it
    /// ([`exit_reasons::code_of`]) and every unknown code under [`exit_reasons::OTHER_CODE`].
    pub exits: BTreeMap<u32, Vec<u64>>,
}

impl ThreadCounters {
    /// Becomes a copy of `current`, reusing the buffers it has (the accounting keeps each
    /// thread's last reading this way every tick).
    pub fn keep(&mut self, current: &ThreadCounters) {
        self.run_ns_by_cpu.clone_from(&current.run_ns_by_cpu);
        self.moves = current.moves;
        self.exits
            .retain(|reason, _| current.exits.contains_key(reason));
        for (reason, by_cpu) in &current.exits {
            self.exits.entry(*reason).or_default().clone_from(by_cpu);
        }
    }
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
    thread_run: Array<MapData, ThreadRun>,
    kvm_exits: PerCpuArray<MapData, ExitCounts>,
    map_errors: PerCpuArray<MapData, u64>,
    depth_filter: depth_filter::DepthFilter,
    /// Whether this kernel's task_struct has `se.depth` (the depth filter may close).
    has_depth: bool,
    status: BTreeMap<&'static str, ProbeStatus>,
    /// Loaded and verified, waiting for [`Probes::attach`].
    prepared: Vec<Probe>,
    /// The KVM exit sources loaded, in the order to try them.
    prepared_exit_sources: Vec<Probe>,
    /// Our copy of the slot words (four 16-bit slots each), so tracking is one map write.
    words: StdHashMap<u32, u64>,
    tracked: BTreeSet<u32>,
    /// Run-array slot of each tracked thread (vCPUs 1..=max_threads, others after them; 0
    /// means untracked).
    slots: StdHashMap<u32, u32>,
    /// Free vCPU slots and free slots of other threads.
    free_slots: Vec<u32>,
    free_other_slots: Vec<u32>,
    slot_words: u32,
    nr_cpus: usize,
    options: ProbeOptions,
    exit_source: Option<&'static str>,
    /// Whether the counter maps are read in batch calls (false once the kernel refused).
    batch_reads: std::sync::atomic::AtomicBool,
}

impl Probes {
    /// Prepares, then attaches what this kernel offers ([`Probes::prepare`], [`Probes::attach`]).
    /// Fails only when sched_switch, the probe everything else depends on, cannot run.
    pub fn load(options: ProbeOptions) -> Result<Probes, ProbeError> {
        let mut probes = Probes::prepare(options)?;
        probes.attach()?;
        Ok(probes)
    }

    /// Reads this kernel's layouts (BTF, tracefs), sizes the maps, loads the object and loads
    /// every selected program so the verifier checks it; nothing is attached yet.
    pub fn prepare(options: ProbeOptions) -> Result<Probes, ProbeError> {
        let (layout, task_cpu) = {
            let kernel_btf = btf::KernelBtf::read(Path::new(VMLINUX_BTF))?;
            let layout = sched_switch::task_layout(&kernel_btf)?;
            (layout, sched_migrate_task::task_cpu_offset(&kernel_btf))
        };
        let mut globals = layout.globals;
        // Without the task's CPU, sched_migrate_task is skipped (below) and the offset unused.
        globals.push((TASK_CPU_OFFSET, task_cpu.as_ref().copied().unwrap_or(0)));
        globals.extend(kvm_exit::globals());
        let slot_words = tracked::slot_words(pid_max());
        let all_threads = options.max_threads + options.max_other_threads;
        let nr_cpus = aya::util::nr_cpus()
            .map_err(|(path, source)| ProbeError::PossibleCpus { path, source })?;
        // The loader parses the kernel's BTF (~11 MiB of heap for this 5.5 MB vmlinux) and
        // keeps it until dropped: dropped here, before the programs are prepared against a
        // second parse below, so the daemon's peak holds one parse, not two.
        let mut ebpf = {
            let mut loader = EbpfLoader::new();
            loader
                .set_max_entries(TRACKED_TIDS, slot_words)
                .set_max_entries(RUN_NS, sched_switch::slot_entries(all_threads))
                .set_max_entries(THREAD_RUN, sched_switch::slot_entries(all_threads))
                .set_max_entries(KVM_EXITS, sched_switch::slot_entries(options.max_threads))
                .set_max_entries(CPU_TOPO, nr_cpus as u32);
            for (name, value) in &globals {
                loader.set_global(name, value, true);
            }
            loader.load(PROBES_OBJECT)?
        };
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
        let mut cpu_topo: Array<MapData, CpuTopo> =
            Array::try_from(take(&mut ebpf, CPU_TOPO)?).map_err(map_err(CPU_TOPO))?;
        for cpu in 0..nr_cpus as u32 {
            let topo = options
                .cpu_topo
                .get(&cpu)
                .copied()
                .unwrap_or(CpuTopo::UNKNOWN);
            cpu_topo.set(cpu, topo, 0).map_err(map_err(CPU_TOPO))?;
        }
        let mut probes = Probes {
            tracked_tids: Array::try_from(take(&mut ebpf, TRACKED_TIDS)?)
                .map_err(map_err(TRACKED_TIDS))?,
            run_ns: PerCpuArray::try_from(take(&mut ebpf, RUN_NS)?).map_err(map_err(RUN_NS))?,
            thread_run: Array::try_from(take(&mut ebpf, THREAD_RUN)?)
                .map_err(map_err(THREAD_RUN))?,
            kvm_exits: PerCpuArray::try_from(take(&mut ebpf, KVM_EXITS)?)
                .map_err(map_err(KVM_EXITS))?,
            map_errors: PerCpuArray::try_from(take(&mut ebpf, MAP_ERRORS)?)
                .map_err(map_err(MAP_ERRORS))?,
            depth_filter: depth_filter::DepthFilter::take(&mut ebpf)?,
            has_depth: layout.has_depth,
            ebpf,
            status: BTreeMap::new(),
            prepared: Vec::new(),
            prepared_exit_sources: Vec::new(),
            words: StdHashMap::new(),
            tracked: BTreeSet::new(),
            slots: StdHashMap::new(),
            // Handed out from the end, so slot 1 goes first.
            free_slots: (1..=options.max_threads).rev().collect(),
            free_other_slots: (options.max_threads + 1..=all_threads).rev().collect(),
            slot_words,
            nr_cpus,
            options,
            exit_source: None,
            batch_reads: std::sync::atomic::AtomicBool::new(true),
        };
        let btf = Btf::from_sys_fs().map_err(ProbeError::KernelBtf)?;
        // Each probe, with what keeps it from loading on this kernel, if anything.
        for (probe, unusable) in [
            (sched_switch::PROBE, None),
            (sched_process_exit::PROBE, None),
            (sched_migrate_task::PROBE, task_cpu.err()),
            (depth_filter::PROBE, None),
        ] {
            let prepared = match unusable {
                Some(e) => Err(e.into()),
                None => probe.prepare(&mut probes.ebpf, &btf),
            };
            match prepared {
                Ok(()) => {
                    probes.set_status(probe.program, false, "prepared, not attached yet".into());
                    probes.prepared.push(probe);
                }
                Err(e) => probes.skip_or_fail(probe, e)?,
            }
        }
        probes.prepare_exit_sources(&btf);
        Ok(probes)
    }

    /// Attaches every prepared program and logs which attached and which were skipped and why.
    /// Fails only when sched_switch cannot attach.
    pub fn attach(&mut self) -> Result<(), ProbeError> {
        for probe in std::mem::take(&mut self.prepared) {
            match probe.attach(&mut self.ebpf) {
                Ok(()) => self.set_status(probe.program, true, probe.attach_point()),
                Err(e) => self.skip_or_fail(probe, e)?,
            }
        }
        self.attach_exit_source();
        let move_probe = self.status.get(depth_filter::PROBE.program);
        if self.has_depth && move_probe.is_some_and(|st| st.attached) {
            self.depth_filter.allow_closing();
        }
        let (attached, skipped): (Vec<_>, Vec<_>) =
            self.status.iter().partition(|(_, st)| st.attached);
        let attached: Vec<&str> = attached.into_iter().map(|(name, _)| *name).collect();
        let skipped: Vec<String> = skipped
            .into_iter()
            .map(|(name, st)| format!("{name}: {}", st.detail))
            .collect();
        tracing::info!(
            "probes attached: {}; skipped: {}",
            attached.join(", "),
            if skipped.is_empty() {
                "none".to_string()
            } else {
                skipped.join("; ")
            }
        );
        Ok(())
    }

    /// A required probe's failure fails the load; an optional one is skipped with a warning
    /// saying what is lost, and reported in its status.
    fn skip_or_fail(&mut self, probe: Probe, error: ProbeError) -> Result<(), ProbeError> {
        let Some(lost) = probe.without_it else {
            return Err(error);
        };
        tracing::warn!(error = %error, "{} probe skipped: {lost}", probe.program);
        self.set_status(probe.program, false, error.to_string());
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

    /// Threads tracked now.
    pub fn tracked(&self) -> &BTreeSet<u32> {
        &self.tracked
    }
}

/// The kernel's largest thread id + 1; when unreadable, the largest value the kernel allows,
/// so every thread id still has a slot (at 1 MiB of table).
pub fn pid_max() -> u32 {
    const PID_MAX_LIMIT: u32 = 1 << 22;
    let read = std::fs::read_to_string(PID_MAX).map_err(|e| e.to_string());
    match read.and_then(|s| s.trim().parse::<u32>().map_err(|e| e.to_string())) {
        Ok(pid_max) => pid_max,
        Err(e) => {
            tracing::warn!("{PID_MAX}: {e}; sizing {TRACKED_TIDS} for pid_max {PID_MAX_LIMIT}");
            PID_MAX_LIMIT
        }
    }
}

/// The globals for `fields` of `category:event`, offsets from its tracefs format. A field that
/// tracefs does not give keeps the program's compiled-in default (the layout of every kernel
/// since 5.x): a missing tracepoint is reported when its probe attaches, not here.
fn tracefs_globals(
    category: &str,
    event: &str,
    fields: &[(&'static str, &str)],
) -> Vec<(&'static str, u32)> {
    fields
        .iter()
        .filter_map(|&(global, field)| {
            tracefs::field_offset(category, event, field)
                .map(|offset| (global, offset))
                .map_err(|e| tracing::debug!("{global} keeps its default: {e}"))
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ThreadCounters;

    #[test]
    fn keep_makes_an_exact_copy_whatever_was_there() {
        let counters = |run: &[u64], exits: &[(u32, &[u64])]| ThreadCounters {
            run_ns_by_cpu: run.to_vec(),
            exits: exits.iter().map(|(r, by)| (*r, by.to_vec())).collect(),
            ..ThreadCounters::default()
        };
        let mut last = counters(&[1, 2, 3, 4], &[(1, &[5, 6]), (30, &[7, 8])]);
        let current = counters(&[9, 10], &[(30, &[11]), (48, &[12, 13])]);
        last.keep(&current);
        assert_eq!(last, current);
        last.keep(&ThreadCounters::default());
        assert_eq!(last, ThreadCounters::default());
    }
}
