//! sched_switch: on-CPU time of tracked threads per CPU.
//!
//! Run time is read from the kernel's own run-time clock of each thread
//! (`se.sum_exec_runtime`, what /proc/TID/schedstat shows) at every switch the thread takes
//! part in, and the growth since the last such reading is added to the CPU it ran on. So the
//! total agrees with schedstat by construction, even when a switch never reaches the
//! tracepoint: some kernels switch tasks without it (measured on 6.18, see BENCHMARKS.md),
//! and a stint whose start was not seen is still counted, on the CPU where it is seen to end.
//! sched_migrate_task (CPU-to-CPU moves) and sched_process_exit (the last stint) share these maps.

/// `PerCpuArray<CpuRun>` indexed by a tracked thread's slot (see [`crate::tracked`]); slot 0
/// is never handed out, so the map has `max_threads + 1` entries. Per-CPU values need no
/// atomics.
pub const RUN_NS: &str = "RUN_NS";

/// `Array<ThreadRun>` indexed by slot, as [`RUN_NS`]: where each tracked thread's run time
/// has been counted up to. One value per thread, not per CPU: a thread takes part in one
/// switch at a time, so only one CPU writes its value at any moment.
pub const THREAD_RUN: &str = "THREAD_RUN";

/// Global: byte offset of `pid` in `struct task_struct`, read from the running kernel's BTF.
pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
/// Global: byte offset of `se.sum_exec_runtime` in `struct task_struct`: the kernel's own
/// run-time clock of the task (what /proc/TID/schedstat shows), up to date at every switch.
pub const TASK_RUNTIME_OFFSET: &str = "TASK_RUNTIME_OFFSET";

/// Global: byte offset of `se.depth` in `struct task_struct`: how deep the task's CPU
/// cgroup (its scheduler task group) sits below the root, 0 for the root (and on kernels
/// without group scheduling, where the daemon points it at `pid` and keeps the filter open).
pub const TASK_DEPTH_OFFSET: &str = "TASK_DEPTH_OFFSET";

/// Writable global (a `.data` section of its own, so a map of one `u64`): the depth filter.
/// Bit `d` set: threads whose [`depth_bit`] is `d` may be tracked, so sched_switch looks them
/// up; a switch between two threads of other depths stops there, without touching the
/// thread table (or the `pid` line of either task). VMMs' threads sit in cgroups of their own
/// (libvirt: `machine/<vm>/vcpuN`), deeper than most of the host's threads, so on a host most
/// switches stop at this test. [`ALL_DEPTHS`] at load, and while the daemon checks a thread
/// whose depth it could not trust. Otherwise the word only gains bits: from the daemon (each
/// tracked thread's depth, read from /proc/TID/cgroup when tracked, then as the probes record
/// it in [`ThreadRun::depth`]) and from the cgroup_attach_task program (a tracked thread moved).
/// A bit left from a VM that is gone costs a little speed, never a count.
pub const TRACKED_DEPTHS: &str = ".data.tracked_depths";

/// [`TRACKED_DEPTHS`] that lets every thread through to the table lookup.
pub const ALL_DEPTHS: u64 = u64::MAX;

/// [`ThreadRun::depth`] of a thread whose depth the daemon could not read when it tracked it.
pub const UNKNOWN_DEPTH: u32 = u32::MAX;

/// The bit of [`TRACKED_DEPTHS`] for a thread at `depth`. Depths 64 apart share a bit: a
/// filter lets more through, never less.
#[inline(always)]
pub const fn depth_bit(depth: u32) -> u64 {
    1 << (depth % 64)
}

/// [`ThreadRun::cpu`] before the thread's first switch since it was tracked.
pub const UNKNOWN_CPU: u32 = u32::MAX;

/// One CPU's value of a tracked thread in [`RUN_NS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuRun {
    /// Nanoseconds the thread ran on this CPU, counted at its switches.
    pub run_ns: u64,
    /// Moves of the thread from CPU to CPU, indexed by
    /// [`crate::sched_migrate_task::MoveScope`], counted on the CPU that did the move.
    pub moves: [u64; crate::sched_migrate_task::MOVE_SCOPES],
}

/// A tracked thread's value in [`THREAD_RUN`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadRun {
    /// The thread's `se.sum_exec_runtime` when its run time was last counted: at tracking
    /// (from schedstat), then at each of its switches.
    pub counted_runtime: u64,
    /// The CPU of its last switch, [`UNKNOWN_CPU`] before the first.
    pub cpu: u32,
    /// 1 from a switch onto `cpu` until the next switch off it.
    pub on_cpu: u32,
    /// `se.depth` (see [`TRACKED_DEPTHS`]) at its last switch or cgroup move, or as the daemon
    /// read it from /proc/TID/cgroup when it tracked the thread ([`UNKNOWN_DEPTH`] if it
    /// could not).
    pub depth: u32,
    /// Keeps the size a multiple of 8 with no implicit padding (always 0).
    pub reserved: u32,
}

impl ThreadRun {
    /// A thread tracked when its run-time clock reads `runtime`, at cgroup `depth`: counting
    /// starts there.
    pub fn tracked_at(runtime: u64, depth: u32) -> Self {
        ThreadRun {
            counted_runtime: runtime,
            cpu: UNKNOWN_CPU,
            on_cpu: 0,
            depth,
            reserved: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and only u64s (one, then an array), so no padding; any bit pattern is a
// valid value.
unsafe impl aya::Pod for CpuRun {}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], a u64 then four u32s (24 bytes, no padding); any bit pattern is valid.
unsafe impl aya::Pod for ThreadRun {}

/// The [`TRACKED_DEPTHS`] bits for tracked threads at `depths`: [`ALL_DEPTHS`] when any is
/// [`UNKNOWN_DEPTH`], 0 when none is tracked. A thread at depth 0 (the root cgroup) also gets
/// bit 1: with autogroups on, the scheduler puts a root-cgroup task one level down.
pub fn depth_filter(depths: impl IntoIterator<Item = u32>) -> u64 {
    depths
        .into_iter()
        .try_fold(0, |word, depth| match depth {
            UNKNOWN_DEPTH => None,
            0 => Some(word | depth_bit(0) | depth_bit(1)),
            _ => Some(word | depth_bit(depth)),
        })
        .unwrap_or(ALL_DEPTHS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_lets_through_every_known_depth_and_everything_while_one_is_unknown() {
        assert_eq!(depth_filter([]), 0);
        assert_eq!(depth_filter([3, 3, 4]), 0b11000);
        assert_eq!(depth_filter([0]), 0b11);
        assert_eq!(depth_filter([3, UNKNOWN_DEPTH, 4]), ALL_DEPTHS);
        // Deeper than 63: shares a bit with depth % 64 (lets more through, never less).
        assert_eq!(depth_filter([65]), depth_bit(1));
        assert_eq!(depth_bit(63), 1 << 63);
    }
}
