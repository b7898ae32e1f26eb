//! The depth filter in front of the thread table, as the daemon keeps it, and
//! cgroup_attach_task, the probe that keeps it right when a tracked thread changes cgroup.
//!
//! sched_switch looks a thread up in the table only when its cgroup depth (`se.depth`) has its
//! bit in the filter word (`monitor_common::sched_switch::TRACKED_DEPTHS`). A thread's depth
//! comes from /proc/TID/cgroup when it is tracked ([`super::cgroup_depth`]), then from the
//! probes: sched_switch records it at each of its switches, cgroup_attach_task when it moves.
//! At every read the daemon adds the bits of every tracked thread's recorded depth
//! ([`DepthFilter::update`]); the word never loses a bit while the daemon runs.
//!
//! What could still hide a tracked thread: a depth read wrong from /proc (a daemon in a cgroup
//! namespace of its own), a change the move tracepoint does not show (cgroup v2's `cpu`
//! controller switched on or off above a VM, a process moved whose leader is not tracked). So
//! every [`CHECK_EVERY`] the daemon compares the run-time clock of each tracked thread the
//! probes have not seen since the last check with the kernel's (/proc/TID/schedstat): one that
//! ran unseen opens the filter until the probes see it, which records its real depth.
//! Without `se.depth` (no group scheduling) or without the probe, the filter stays open: the
//! counts are the same, each switch only costs what it did before the filter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aya::maps::{Array, MapData};
use monitor_common::programs;
use monitor_common::sched_switch::{
    depth_filter, ThreadRun, ALL_DEPTHS, TRACKED_DEPTHS, UNKNOWN_DEPTH,
};

use super::error::map_err;
use super::hook::{Hook, Probe};
use super::ProbeError;

/// Optional: without it a thread's move to another cgroup would go unseen until the check, so
/// the filter stays open.
pub(super) const PROBE: Probe = Probe {
    program: programs::CGROUP_ATTACH_TASK,
    hook: Hook::BtfTracepoint("cgroup_attach_task"),
    without_it: Some(
        "the depth filter stays open: every context switch looks up the thread table (counts are the same, each switch costs more)",
    ),
};

/// How often every tracked thread the probes have not seen since the last check is checked
/// against its run-time clock. Each such thread costs a /proc read, and at 100 VMs whose idle
/// guests halt for good that is ~900 threads: every 10 s it cost the daemon ~0.07% of a core
/// (BENCHMARKS.md). A thread that ran unseen loses none of its run time meanwhile.
pub const CHECK_EVERY: Duration = Duration::from_secs(60);

/// A tracked thread as one read of the probe maps found it.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// Thread id.
    pub tid: u32,
    /// Its slot in the maps.
    pub slot: u32,
    /// Its THREAD_RUN entry; None when it could not be read.
    pub thread: Option<ThreadRun>,
}

/// The filter word in the kernel, whether it may close, and the check's state.
pub(super) struct DepthFilter {
    /// A map of one u64 (the `.data` section of its own that holds it).
    word: Mutex<Array<MapData, u64>>,
    /// False on a kernel without `se.depth` or when cgroup_attach_task did not attach.
    may_close: bool,
    check: Mutex<Check>,
}

/// What the check for threads that run unseen remembers between reads.
#[derive(Default)]
struct Check {
    last: Option<Instant>,
    /// Each tracked thread's counted run-time clock at the last check.
    counted: HashMap<u32, u64>,
    /// Threads that ran unseen, with their counted clock then: the filter is open until it
    /// moves (the probes saw the thread).
    unseen: HashMap<u32, u64>,
    /// Threads found running unseen since the daemon started.
    found: u64,
}

impl DepthFilter {
    /// Takes the filter's map out of the loaded object; the filter starts open.
    pub fn take(ebpf: &mut aya::Ebpf) -> Result<DepthFilter, ProbeError> {
        let map = ebpf
            .take_map(TRACKED_DEPTHS)
            .ok_or(ProbeError::Missing(TRACKED_DEPTHS))?;
        let word = Array::try_from(map).map_err(map_err(TRACKED_DEPTHS))?;
        Ok(DepthFilter {
            word: Mutex::new(word),
            may_close: false,
            check: Mutex::new(Check::default()),
        })
    }

    /// Lets the filter close from now on (the kernel has `se.depth` and cgroup_attach_task
    /// runs).
    pub fn allow_closing(&mut self) {
        self.may_close = true;
    }

    /// Whether the filter can close on this host at all.
    pub fn may_close(&self) -> bool {
        self.may_close
    }

    /// Tracked threads the check found running unseen since the daemon started.
    pub fn threads_ran_unseen(&self) -> u64 {
        self.check.lock().unwrap_or_else(|e| e.into_inner()).found
    }

    /// The filter word in the kernel now.
    pub fn word(&self) -> Result<u64, ProbeError> {
        let word = self.word.lock().unwrap_or_else(|e| e.into_inner());
        word.get(&0, 0).map_err(map_err(TRACKED_DEPTHS))
    }

    /// Lets threads at `depth` through, before a thread at that depth is published in the
    /// table (an unknown depth opens the filter until the thread is seen).
    pub fn let_through(&self, depth: u32) -> Result<(), ProbeError> {
        self.widen(depth_filter([depth]))
    }

    /// After a read of the maps: checks (every [`CHECK_EVERY`]) for threads that ran unseen,
    /// then adds the bits of every thread's recorded depth, or opens the filter while one ran
    /// unseen and has not been seen since. `reread` looks a slot's THREAD_RUN entry up again.
    pub fn update(
        &self,
        threads: &[Seen],
        reread: impl Fn(u32) -> Option<ThreadRun>,
        now: Instant,
    ) -> Result<(), ProbeError> {
        if !self.may_close {
            return self.set(ALL_DEPTHS);
        }
        let mut check = self.check.lock().unwrap_or_else(|e| e.into_inner());
        check.forget_seen(threads);
        if check
            .last
            .is_none_or(|last| now.duration_since(last) >= CHECK_EVERY)
        {
            check.find_unseen(threads, reread, super::counters::thread_runtime_ns);
            check.last = Some(now);
        }
        if !check.unseen.is_empty() {
            return self.set(ALL_DEPTHS);
        }
        let want = depth_filter(
            threads
                .iter()
                .map(|t| t.thread.map_or(UNKNOWN_DEPTH, |t| t.depth)),
        );
        match self.word()? {
            ALL_DEPTHS => self.set(want),
            word => self.set(word | want),
        }
    }

    /// Adds `bits` to the word.
    fn widen(&self, bits: u64) -> Result<(), ProbeError> {
        let word = self.word()?;
        self.set(word | bits)
    }

    fn set(&self, value: u64) -> Result<(), ProbeError> {
        let mut word = self.word.lock().unwrap_or_else(|e| e.into_inner());
        if word.get(&0, 0).ok() == Some(value) {
            return Ok(());
        }
        tracing::debug!("depth filter: {value:#x}");
        word.set(0, value, 0).map_err(map_err(TRACKED_DEPTHS))
    }
}

impl Check {
    /// Threads in `unseen` that the probes have seen since (their counted clock moved), or
    /// that are no longer tracked, leave it.
    fn forget_seen(&mut self, threads: &[Seen]) {
        if self.unseen.is_empty() {
            return;
        }
        let now: HashMap<u32, u64> = threads
            .iter()
            .filter_map(|t| Some((t.tid, t.thread?.counted_runtime)))
            .collect();
        self.unseen
            .retain(|tid, counted| now.get(tid) == Some(counted));
    }

    /// Marks as unseen each thread off CPU whose counted clock has not moved since the last
    /// check while the kernel's has: it ran, and the probes did not see it switch. Its entry
    /// is read again after the kernel's clock, so a switch in between is not taken for one
    /// the probes missed.
    fn find_unseen(
        &mut self,
        threads: &[Seen],
        reread: impl Fn(u32) -> Option<ThreadRun>,
        kernel_clock: impl Fn(u32) -> std::io::Result<u64>,
    ) {
        let mut counted = HashMap::with_capacity(threads.len());
        for seen in threads {
            let Some(thread) = seen.thread else { continue };
            counted.insert(seen.tid, thread.counted_runtime);
            let idle = self.counted.get(&seen.tid) == Some(&thread.counted_runtime);
            if !idle || thread.on_cpu == 1 || self.unseen.contains_key(&seen.tid) {
                continue;
            }
            let Ok(clock) = kernel_clock(seen.tid) else {
                continue;
            };
            let again = reread(seen.slot);
            let unchanged =
                again.is_some_and(|a| a.counted_runtime == thread.counted_runtime && a.on_cpu == 0);
            if clock > thread.counted_runtime && unchanged {
                tracing::warn!(
                    tid = seen.tid,
                    depth = thread.depth,
                    "a tracked thread ran {} ns that sched_switch did not see (its cgroup depth is not the one the filter knows): the depth filter is open until the probes see it",
                    clock - thread.counted_runtime
                );
                self.unseen.insert(seen.tid, thread.counted_runtime);
                self.found += 1;
            }
        }
        self.counted = counted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use monitor_common::sched_switch::UNKNOWN_CPU;

    fn thread(counted: u64, on_cpu: u32) -> ThreadRun {
        ThreadRun {
            counted_runtime: counted,
            cpu: UNKNOWN_CPU,
            on_cpu,
            depth: 3,
            reserved: 0,
        }
    }

    fn seen(tid: u32, t: ThreadRun) -> Seen {
        Seen {
            tid,
            slot: tid,
            thread: Some(t),
        }
    }

    #[test]
    fn a_thread_that_ran_unseen_is_found_and_forgotten_once_seen() {
        let mut check = Check::default();
        let clock = |tid: u32| Ok(if tid == 1 { 500 } else { 100 });
        // First check: nothing to compare with yet.
        let first = [seen(1, thread(100, 0)), seen(2, thread(100, 0))];
        check.find_unseen(
            &first,
            |slot| first.iter().find(|s| s.slot == slot)?.thread,
            clock,
        );
        assert!(check.unseen.is_empty());
        // Thread 1's clock ran on to 500 while its counted clock stayed at 100; thread 2 slept.
        check.find_unseen(
            &first,
            |slot| first.iter().find(|s| s.slot == slot)?.thread,
            clock,
        );
        assert_eq!(check.unseen.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(check.found, 1);
        // Seen again: the probes counted it.
        check.forget_seen(&[seen(1, thread(500, 0)), seen(2, thread(100, 0))]);
        assert!(check.unseen.is_empty());
    }

    #[test]
    fn a_switch_between_the_reads_or_a_thread_on_cpu_is_not_unseen() {
        let mut check = Check::default();
        let clock = |_| Ok(500);
        let on_cpu = [seen(1, thread(100, 1))];
        check.find_unseen(&on_cpu, |_| Some(thread(100, 1)), clock);
        check.find_unseen(&on_cpu, |_| Some(thread(100, 1)), clock);
        assert!(check.unseen.is_empty(), "on CPU: its stint is in progress");
        let mut check = Check::default();
        let off = [seen(1, thread(100, 0))];
        check.find_unseen(&off, |_| Some(thread(100, 0)), clock);
        // Switched on between the first read and the kernel's clock: the reread shows it.
        check.find_unseen(&off, |_| Some(thread(100, 1)), clock);
        assert!(check.unseen.is_empty());
        // A thread that is gone (no clock) is not unseen either.
        check.find_unseen(
            &off,
            |_| Some(thread(100, 0)),
            |_| Err(std::io::ErrorKind::NotFound.into()),
        );
        assert!(check.unseen.is_empty());
    }

    #[test]
    fn an_untracked_thread_leaves_the_unseen() {
        let mut check = Check::default();
        check.unseen.insert(7, 100);
        check.forget_seen(&[]);
        assert!(check.unseen.is_empty());
    }
}
