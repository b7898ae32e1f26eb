//! sched_switch: on-CPU time of tracked vCPU threads, per CPU.
//!
//! At every switch a tracked thread takes part in, the growth of its run-time clock since it
//! was last counted goes to this CPU (see `monitor_common::sched_switch`). Switched off, that
//! is the stint just ended here; switched on, it is normally nothing, or a stint whose
//! switches the tracepoint did not show.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::{Array, PerCpuArray},
    programs::BtfTracePointContext,
};
use monitor_common::sched_switch::{CpuRun, ThreadRun, UNKNOWN_CPU};
use monitor_common::tracked::MapError;

use crate::task::{depth_offset, task_depth_at, task_runtime, task_tid};
use crate::tracked::{count_map_error, depth_may_be_tracked, tracked_depths, tracked_slot};

/// Per tracked thread (indexed by its slot), per CPU: run time and moves. Shared with
/// sched_process_exit (the last stint) and sched_migrate_task (CPU-to-CPU moves).
#[map(name = "RUN_NS")]
pub static RUN_NS: PerCpuArray<CpuRun> = PerCpuArray::with_max_entries(1, 0);

/// Per tracked thread (indexed by its slot): its run-time clock when last counted, and where.
#[map(name = "THREAD_RUN")]
pub static THREAD_RUN: Array<ThreadRun> = Array::with_max_entries(1, 0);

/// `sched_switch(preempt, prev, next, prev_state)`: counts prev's stint, marks next on CPU.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 1 and 2 of sched_switch are the prev and next task_struct pointers.
    let (prev, next): (*const u8, *const u8) = unsafe { (ctx.arg(1), ctx.arg(2)) };
    // Most switches on a host stop here: neither thread sits at a depth of cgroup where a
    // tracked thread is.
    let depths = tracked_depths();
    let offset = depth_offset();
    let (prev_depth, next_depth) = (task_depth_at(prev, offset), task_depth_at(next, offset));
    if !depth_may_be_tracked(depths, prev_depth) && !depth_may_be_tracked(depths, next_depth) {
        return 0;
    }
    let prev_slot = tracked_slot(task_tid(prev));
    let next_slot = tracked_slot(task_tid(next));
    if prev_slot != 0 {
        count_run(prev_slot, task_runtime(prev), prev_depth, 0);
    }
    if next_slot != 0 {
        count_run(next_slot, task_runtime(next), next_depth, 1);
    }
    0
}

/// The thread in `slot` leaves this CPU with its run-time clock at `runtime`.
#[inline(always)]
pub fn switch_out(slot: u32, runtime: u64, depth: u32) {
    count_run(slot, runtime, depth, 0);
}

/// Adds the growth of the thread's run-time clock (now `runtime`) since it was last counted to
/// this CPU, and records it as on this CPU (`on_cpu` 1) or off it (0), at cgroup `depth`.
#[inline(always)]
fn count_run(slot: u32, runtime: u64, depth: u32, on_cpu: u32) {
    let (Some(thread), Some(run)) = (THREAD_RUN.get_ptr_mut(slot), RUN_NS.get_ptr_mut(slot)) else {
        count_map_error(MapError::MissingThread);
        return;
    };
    // SAFETY: both pointers come from successful lookups. `run` is this CPU's value, only
    // written from this CPU; `thread` is written only at this thread's switches, which the
    // scheduler serialises (a thread is switched on one CPU at a time).
    unsafe {
        // Switched on twice, or off twice: the switch between was never shown to us.
        if (*thread).cpu != UNKNOWN_CPU && (*thread).on_cpu == on_cpu {
            count_map_error(MapError::UnseenSwitch);
        }
        let counted = (*thread).counted_runtime;
        if runtime > counted {
            (*run).run_ns += runtime - counted;
            (*thread).counted_runtime = runtime;
        }
        (*thread).cpu = aya_ebpf::helpers::bpf_get_smp_processor_id();
        (*thread).on_cpu = on_cpu;
        (*thread).depth = depth;
    }
}
