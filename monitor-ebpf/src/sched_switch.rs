//! sched_switch: on-CPU time of tracked vCPU threads, per CPU.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::BtfTracePointContext,
};
use monitor_common::sched_switch::CpuRun;
use monitor_common::tracked::MapError;

use crate::task::{task_runtime, task_tid};
use crate::tracked::{count_map_error, tracked_slot};

/// Per tracked thread (indexed by its slot), per CPU: run time, the stint in progress, socket
/// moves. A stint starts and ends on the same CPU, so switch-in and switch-out touch only this
/// CPU's value; an array, so the lookup is inlined rather than hashed. Shared with
/// sched_process_exit (closes the last stint) and sched_migrate_task (counts socket moves).
#[map(name = "RUN_NS")]
pub static RUN_NS: PerCpuArray<CpuRun> = PerCpuArray::with_max_entries(1, 0);

/// `sched_switch(preempt, prev, next, prev_state)`: closes prev's stint, opens next's.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 1 and 2 of sched_switch are the prev and next task_struct pointers.
    let (prev, next): (*const u8, *const u8) = unsafe { (ctx.arg(1), ctx.arg(2)) };
    let prev_tid = task_tid(prev);
    let next_tid = task_tid(next);
    let prev_slot = tracked_slot(prev_tid);
    let next_slot = tracked_slot(next_tid);
    if prev_slot == 0 && next_slot == 0 {
        return 0;
    }
    if prev_slot != 0 {
        switch_out(prev_slot, task_runtime(prev));
    }
    if next_slot != 0 {
        match RUN_NS.get_ptr_mut(next_slot) {
            // SAFETY: this CPU's value, only written from this CPU.
            Some(run) => unsafe {
                (*run).runtime_at_switch_in = task_runtime(next);
                (*run).on_cpu = 1;
            },
            None => count_map_error(MapError::MissingThread),
        }
    }
    0
}

/// Closes the stint of the thread in `slot` on this CPU, given its run time now.
#[inline(always)]
pub fn switch_out(slot: u32, runtime: u64) {
    let Some(run) = RUN_NS.get_ptr_mut(slot) else {
        count_map_error(MapError::MissingThread);
        return;
    };
    // SAFETY: this CPU's value, only written from this CPU.
    unsafe {
        let since = (*run).runtime_at_switch_in;
        if (*run).on_cpu == 1 && runtime >= since {
            (*run).run_ns += runtime - since;
        }
        (*run).on_cpu = 0;
    }
}
