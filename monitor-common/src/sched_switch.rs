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
}

impl ThreadRun {
    /// A thread tracked when its run-time clock reads `runtime`: counting starts there.
    pub fn tracked_at(runtime: u64) -> Self {
        ThreadRun {
            counted_runtime: runtime,
            cpu: UNKNOWN_CPU,
            on_cpu: 0,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and only u64s (one, then an array), so no padding; any bit pattern is a
// valid value.
unsafe impl aya::Pod for CpuRun {}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)], a u64 then two u32s (16 bytes, no padding); any bit pattern is valid.
unsafe impl aya::Pod for ThreadRun {}
