//! Tracking threads: a slot per thread in the probes' maps, its counters cleared, its depth
//! let through the depth filter, then its slot published in the thread table.

use aya::maps::PerCpuValues;
use monitor_common::kvm_exit::{ExitCounts, KVM_EXITS};
use monitor_common::sched_switch::{CpuRun, ThreadRun, RUN_NS, THREAD_RUN, UNKNOWN_DEPTH};
use monitor_common::tracked::{slot_shift, slot_word, SLOTS_PER_WORD, SLOT_MASK, TRACKED_TIDS};

use super::cgroup_depth;
use super::counters::thread_runtime_ns;
use super::error::map_err;
use super::{ProbeError, Probes, ThreadCounters};

impl Probes {
    /// Starts accounting `tid` as a vCPU thread.
    pub fn track(&mut self, tid: u32) -> Result<(), ProbeError> {
        self.track_as(tid, true)
    }

    /// Starts accounting `tid`, a QEMU thread that is not a vCPU (run time and moves; no
    /// KVM exits), in a slot of its own pool (`max_other_threads`).
    pub fn track_other(&mut self, tid: u32) -> Result<(), ProbeError> {
        self.track_as(tid, false)
    }

    fn track_as(&mut self, tid: u32, vcpu: bool) -> Result<(), ProbeError> {
        if self.tracked.contains(&tid) {
            return Ok(());
        }
        if slot_word(tid) >= self.slot_words {
            return Err(ProbeError::TidBeyondTable {
                tid,
                table_tids: self.slot_words * SLOTS_PER_WORD,
            });
        }
        // Read before a slot is taken, so a thread that is gone takes none.
        let runtime =
            thread_runtime_ns(tid).map_err(|source| ProbeError::ThreadClock { tid, source })?;
        let depth = cgroup_depth::of_thread(tid).unwrap_or_else(|e| {
            tracing::info!(tid, "cgroup depth unknown ({e}): the depth filter is open until the probes see the thread switch");
            UNKNOWN_DEPTH
        });
        let (pool, capacity, key) = if vcpu {
            let key = "probes.max_threads";
            (&mut self.free_slots, self.options.max_threads, key)
        } else {
            let key = "probes.max_other_threads";
            (
                &mut self.free_other_slots,
                self.options.max_other_threads,
                key,
            )
        };
        let slot = pool.pop().ok_or(ProbeError::Full { tid, capacity, key })?;
        // Counters first, the slot last: the probes never see a half-tracked thread, and a
        // slot's counters left by its previous thread (or by a probe that looked the slot up
        // just before that thread was untracked) are cleared, never handed on. Counting
        // starts at the thread's run-time clock, read before the slot was taken; the depth
        // filter lets the thread's depth through before the slot is set.
        // (try_from fails only for a length other than the possible CPUs', which this is.)
        let zeros = PerCpuValues::try_from(vec![CpuRun::default(); self.nr_cpus])
            .map_err(|e| map_err(RUN_NS)(aya::maps::MapError::IoError(e)))?;
        let no_exits = PerCpuValues::try_from(vec![ExitCounts::default(); self.nr_cpus])
            .map_err(|e| map_err(KVM_EXITS)(aya::maps::MapError::IoError(e)))?;
        let published = self
            .run_ns
            .set(slot, zeros, 0)
            .map_err(map_err(RUN_NS))
            .and_then(|()| match self.has_exits(slot) {
                true => self
                    .kvm_exits
                    .set(slot, no_exits, 0)
                    .map_err(map_err(KVM_EXITS)),
                false => Ok(()),
            })
            .and_then(|()| {
                self.thread_run
                    .set(slot, ThreadRun::tracked_at(runtime, depth), 0)
                    .map_err(map_err(THREAD_RUN))
            })
            .and_then(|()| self.depth_filter.let_through(depth))
            .and_then(|()| self.set_slot(tid, slot));
        if let Err(e) = published {
            self.free_slot(slot);
            return Err(e);
        }
        self.slots.insert(tid, slot);
        self.tracked.insert(tid);
        Ok(())
    }

    /// Stops accounting `tid` and frees its map entries, returning its final counters.
    pub fn untrack(&mut self, tid: u32) -> Result<ThreadCounters, ProbeError> {
        // The slot first: from here no probe counts into it; its counters are cleared when
        // the slot is next handed out.
        self.set_slot(tid, 0)?;
        let last = self.read_thread(tid);
        if let Some(slot) = self.slots.remove(&tid) {
            self.free_slot(slot);
        }
        self.tracked.remove(&tid);
        Ok(last)
    }

    /// Whether `slot` is a vCPU's, the only ones with KVM exit counters.
    pub(super) fn has_exits(&self, slot: u32) -> bool {
        slot <= self.options.max_threads
    }

    fn free_slot(&mut self, slot: u32) {
        if self.has_exits(slot) {
            self.free_slots.push(slot);
        } else {
            self.free_other_slots.push(slot);
        }
    }

    fn set_slot(&mut self, tid: u32, slot: u32) -> Result<(), ProbeError> {
        let (index, shift) = (slot_word(tid), slot_shift(tid));
        let word = self.words.entry(index).or_insert(0);
        *word = (*word & !(SLOT_MASK << shift)) | (u64::from(slot) << shift);
        let value = *word;
        if value == 0 {
            self.words.remove(&index);
        }
        self.tracked_tids
            .set(index, value, 0)
            .map_err(map_err(TRACKED_TIDS))
    }
}
