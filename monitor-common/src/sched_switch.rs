//! sched_switch: on-CPU time of tracked threads per CPU.
//!
//! The same per-thread value also carries what sched_migrate_task counts (socket moves) and is
//! closed by sched_process_exit, so those probes share [`RUN_NS`] and [`CpuRun`].

/// `PerCpuArray<CpuRun>` indexed by a tracked thread's slot (see [`crate::tracked`]); slot 0
/// is never handed out, so the map has `max_threads + 1` entries. Per-CPU values need no
/// atomics, and a thread's stint starts and ends on one CPU.
pub const RUN_NS: &str = "RUN_NS";

/// Global: byte offset of `pid` in `struct task_struct`, read from the running kernel's BTF.
pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
/// Global: byte offset of `se.sum_exec_runtime` in `struct task_struct`: the kernel's own
/// run-time clock of the task (what /proc/TID/schedstat shows), up to date at every switch.
pub const TASK_RUNTIME_OFFSET: &str = "TASK_RUNTIME_OFFSET";

/// One CPU's value of a tracked thread in [`RUN_NS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuRun {
    /// Nanoseconds the thread ran on this CPU (closed stints).
    pub run_ns: u64,
    /// The thread's `se.sum_exec_runtime` when it went on this CPU (valid while `on_cpu`).
    pub runtime_at_switch_in: u64,
    /// 1 while the thread is on this CPU.
    pub on_cpu: u64,
    /// Moves of the thread between sockets, counted on the CPU that did the move.
    pub cross_socket_migrations: u64,
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and four u64s, so no padding; any bit pattern is a valid value.
unsafe impl aya::Pod for CpuRun {}
