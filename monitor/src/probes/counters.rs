//! Reading the probes' counters of the tracked threads: what the daemon does every tick.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use aya::maps::IterableMap;
use monitor_common::kvm_exit::{ExitCounts, KVM_EXITS};
use monitor_common::programs;
use monitor_common::sched_migrate_task::MOVE_SCOPES;
use monitor_common::sched_switch::{CpuRun, ThreadRun, RUN_NS};
use monitor_common::tracked::MapError;

use super::batch::Entries;
use super::depth_filter::Seen;
use super::exit_reasons;
use super::DepthFilterState;
use super::{MapUsage, Moves, ProbeError, Probes, ProgramStats, ThreadCounters};

impl Probes {
    /// Cumulative counters of every tracked thread: the slots in use of each map are read in
    /// batch calls of at most [`BATCH_BYTES`] each (entry by entry on a kernel without batch
    /// lookups).
    pub fn read(&self) -> Result<BTreeMap<u32, ThreadCounters>, ProbeError> {
        self.read_chunked(BATCH_BYTES)
    }

    /// [`Probes::read`] with batch calls of at most `batch_bytes` each (at least one slot a
    /// call): the tests read in many small chunks this way.
    pub fn read_chunked(
        &self,
        batch_bytes: usize,
    ) -> Result<BTreeMap<u32, ThreadCounters>, ProbeError> {
        let mut by_slot: Vec<(u32, u32)> = self.slots.iter().map(|(&t, &s)| (s, t)).collect();
        by_slot.sort_unstable();
        // A chunk's buffers stay within BATCH_BYTES on a host of many CPUs (the exit counters
        // of one slot are ~200 bytes per CPU); on a small host one chunk holds a pool's slots.
        let widest = Entries::<ExitCounts>::stride(Some(self.nr_cpus));
        let chunk = (batch_bytes / widest).max(1) as u32;
        let mut out = BTreeMap::new();
        let mut seen = Vec::with_capacity(by_slot.len());
        // Each pool (vCPUs', other threads') from its lowest slot in use to its highest: the
        // free slots at the top of the vCPU pool (and its exit counters) are not copied.
        let (vcpus, others) =
            by_slot.split_at(by_slot.partition_point(|&(s, _)| self.has_exits(s)));
        for pool in [vcpus, others] {
            let (Some(&(low, _)), Some(&(high, _))) = (pool.first(), pool.last()) else {
                continue;
            };
            let mut threads = pool.iter().peekable();
            for first in (low..=high).step_by(chunk as usize) {
                let Some(batch) = self.read_batch(first, chunk.min(high + 1 - first)) else {
                    return self.read_each();
                };
                while let Some(&&(slot, tid)) = threads.peek().filter(|(s, _)| batch.has(*s)) {
                    let values = batch.slot(slot, self.nr_cpus);
                    seen.push(Seen {
                        tid,
                        slot,
                        thread: values.thread,
                    });
                    out.insert(tid, self.counters_of(tid, values));
                    threads.next();
                }
            }
        }
        self.update_depth_filter(&seen);
        Ok(out)
    }

    /// What [`Probes::read`] gives, read entry by entry (a lookup per map and thread): the way
    /// of kernels without batch lookups, and the reference the tests hold the batch read to.
    pub fn read_each(&self) -> Result<BTreeMap<u32, ThreadCounters>, ProbeError> {
        let mut seen = Vec::with_capacity(self.tracked.len());
        let out = self
            .tracked
            .iter()
            .map(|&tid| {
                let values = self.values_of(tid);
                if let Some(&slot) = self.slots.get(&tid) {
                    seen.push(Seen {
                        tid,
                        slot,
                        thread: values.thread,
                    });
                }
                (tid, self.counters_of(tid, values))
            })
            .collect();
        self.update_depth_filter(&seen);
        Ok(out)
    }

    /// Lets the recorded depths of the tracked threads through the depth filter (see
    /// `depth_filter`). A failure costs only speed: it is logged.
    fn update_depth_filter(&self, seen: &[Seen]) {
        let reread = |slot: u32| self.thread_run.get(&slot, 0).ok();
        if let Err(e) = self.depth_filter.update(seen, reread, Instant::now()) {
            tracing::warn!(error = %e, "cannot update the depth filter; it keeps its last value");
        }
    }

    /// The depth filter now (see `depth_filter`).
    pub fn depth_filter(&self) -> Result<DepthFilterState, ProbeError> {
        Ok(DepthFilterState {
            word: self.depth_filter.word()?,
            may_close: self.depth_filter.may_close(),
            threads_ran_unseen: self.depth_filter.threads_ran_unseen(),
        })
    }

    /// Whether [`Probes::read`] reads in batch calls (false after the kernel refused one).
    pub fn reads_in_batches(&self) -> bool {
        self.batch_reads.load(Ordering::Relaxed)
    }

    /// Slots `first..first + count`, one batch lookup per map; None when the kernel cannot
    /// (logged once) or a map could not be read.
    fn read_batch(&self, first: u32, count: u32) -> Option<Batch> {
        if !self.batch_reads.load(Ordering::Relaxed) {
            return None;
        }
        // Only vCPU slots (1..=max_threads) have exit counters.
        let vcpu_count = (self.options.max_threads + 1)
            .saturating_sub(first)
            .min(count);
        let cpus = Some(self.nr_cpus);
        let read = || -> std::io::Result<Batch> {
            Ok(Batch {
                run: Entries::read(self.run_ns.map(), first, count, cpus)?,
                thread: Entries::read(self.thread_run.map(), first, count, None)?,
                exits: Entries::read(self.kvm_exits.map(), first, vcpu_count, cpus)?,
            })
        };
        match read() {
            Ok(batch) => Some(batch),
            Err(e) => {
                tracing::info!(error = %e, "batch lookups of the probe maps failed: reading them entry by entry from now on");
                self.batch_reads.store(false, Ordering::Relaxed);
                None
            }
        }
    }

    /// One slot's values, looked up entry by entry.
    fn lookup_slot(&self, slot: u32) -> SlotValues {
        SlotValues {
            run: self.run_ns.get(&slot, 0).ok().map(|v| v.to_vec()),
            thread: self.thread_run.get(&slot, 0).ok(),
            exits: self
                .has_exits(slot)
                .then(|| self.kvm_exits.get(&slot, 0).ok().map(|v| v.to_vec()))
                .flatten(),
        }
    }

    /// The exits counted on each CPU (`per_cpu`), per reason code (see
    /// [`ThreadCounters::exits`]) and CPU; reasons never seen are left out.
    fn exits_by_reason(&self, per_cpu: &[ExitCounts]) -> BTreeMap<u32, Vec<u64>> {
        let source = self.exit_source.unwrap_or(programs::KVM_EXIT);
        (0..exit_reasons::labels(source).len())
            .filter(|&index| per_cpu.iter().any(|c| c.by_reason[index] > 0))
            .map(|index| {
                let by_cpu = per_cpu.iter().map(|c| c.by_reason[index]).collect();
                (exit_reasons::code_of(source, index), by_cpu)
            })
            .collect()
    }

    pub(super) fn read_thread(&self, tid: u32) -> ThreadCounters {
        self.counters_of(tid, self.values_of(tid))
    }

    fn values_of(&self, tid: u32) -> SlotValues {
        match self.slots.get(&tid) {
            Some(&slot) => self.lookup_slot(slot),
            None => SlotValues::default(),
        }
    }

    fn counters_of(&self, tid: u32, values: SlotValues) -> ThreadCounters {
        let per_cpu = values
            .run
            .unwrap_or_else(|| vec![CpuRun::default(); self.nr_cpus]);
        let mut run_ns_by_cpu: Vec<u64> = per_cpu.iter().map(|c| c.run_ns).collect();
        let mut moves = [0u64; MOVE_SCOPES];
        for cpu in &per_cpu {
            for (total, n) in moves.iter_mut().zip(cpu.moves) {
                *total += n;
            }
        }
        // A vCPU that keeps its CPU is not switched out for long stretches: add its stint in
        // progress (its run-time clock now, past where it was counted), read after the
        // counters so it never counts anything twice. Only threads on a CPU are read, so at
        // most one schedstat file per CPU per tick.
        if let Some(t) = values.thread.filter(|t| t.on_cpu == 1) {
            if let (Some(cpu_run), Ok(now)) = (
                run_ns_by_cpu.get_mut(t.cpu as usize),
                thread_runtime_ns(tid),
            ) {
                *cpu_run += now.saturating_sub(t.counted_runtime);
            }
        }
        ThreadCounters {
            run_ns_by_cpu,
            moves: Moves::from_counts(&moves),
            exits: values
                .exits
                .map(|per_cpu| self.exits_by_reason(&per_cpu))
                .unwrap_or_default(),
        }
    }

    /// Failed map updates inside the probes, summed over CPUs and kinds (`MapError`).
    pub fn map_errors(&self) -> u64 {
        [MapError::KvmExits, MapError::MissingThread]
            .into_iter()
            .map(|kind| self.probe_count(kind))
            .sum()
    }

    /// Switches of tracked threads the sched_switch tracepoint did not show (their run time is
    /// still counted, see `monitor_common::sched_switch`).
    pub fn unseen_switches(&self) -> u64 {
        self.probe_count(MapError::UnseenSwitch)
    }

    fn probe_count(&self, kind: MapError) -> u64 {
        self.map_errors
            .get(&(kind as u32), 0)
            .map(|values| values.iter().sum::<u64>())
            .unwrap_or(0)
    }

    /// Entries in use and capacity of the maps that grow with the number of VMs.
    pub fn map_usage(&self) -> Vec<MapUsage> {
        vec![
            MapUsage {
                map: RUN_NS,
                entries: self.tracked.len() as u64,
                capacity: u64::from(self.options.max_threads + self.options.max_other_threads),
            },
            // One entry per tracked vCPU thread.
            MapUsage {
                map: KVM_EXITS,
                entries: self.slots.values().filter(|&&s| self.has_exits(s)).count() as u64,
                capacity: self.options.max_threads.into(),
            },
        ]
    }

    /// Run time and count per attached program; None when kernel.bpf_stats_enabled is 0.
    /// Programs that are loaded but not attached (none, normally) are left out.
    pub fn program_stats(&self) -> Option<Vec<ProgramStats>> {
        if !bpf_stats_enabled() {
            return None;
        }
        let stats = self
            .ebpf
            .programs()
            .filter_map(|(name, prog)| {
                let (&program, _) = self
                    .status
                    .iter()
                    .find(|(p, st)| **p == name && st.attached)?;
                let info = prog.info().ok()?;
                Some(ProgramStats {
                    program,
                    run_time_ns: info.run_time().as_nanos() as u64,
                    run_count: info.run_count(),
                })
            })
            .collect();
        Some(stats)
    }
}

/// The most bytes one batch lookup copies out (per map): bounds the daemon's buffers on a
/// host of hundreds of CPUs.
const BATCH_BYTES: usize = 1 << 20;

/// What the maps hold for one slot (None: not read, or not a vCPU's for `exits`).
#[derive(Default)]
struct SlotValues {
    run: Option<Vec<CpuRun>>,
    thread: Option<ThreadRun>,
    exits: Option<Vec<ExitCounts>>,
}

/// One reading of the slots in use of every counter map.
struct Batch {
    run: Entries<CpuRun>,
    thread: Entries<ThreadRun>,
    exits: Entries<ExitCounts>,
}

impl Batch {
    /// Whether `slot` is among the slots read.
    fn has(&self, slot: u32) -> bool {
        self.run.has(slot)
    }

    fn slot(&self, slot: u32, cpus: usize) -> SlotValues {
        SlotValues {
            run: per_cpu(&self.run, slot, cpus),
            thread: self.thread.get(slot, 0),
            exits: per_cpu(&self.exits, slot, cpus),
        }
    }
}

/// The value of `slot` on each of `cpus` CPUs; None when the slot was not read.
fn per_cpu<V: aya::Pod>(entries: &Entries<V>, slot: u32, cpus: usize) -> Option<Vec<V>> {
    entries
        .has(slot)
        .then(|| (0..cpus).filter_map(|cpu| entries.get(slot, cpu)).collect())
}

/// Whether the kernel counts BPF program run time (`kernel.bpf_stats_enabled`).
pub fn bpf_stats_enabled() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled")
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

/// The kernel's run time of a thread (`se.sum_exec_runtime`, first field of schedstat).
pub(super) fn thread_runtime_ns(tid: u32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/schedstat"))?;
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no run time in {text:?}"),
            )
        })
}
