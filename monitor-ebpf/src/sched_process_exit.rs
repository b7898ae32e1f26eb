//! sched_process_exit: a tracked thread's last stint, and untracking it the moment it exits.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::sched_switch::switch_out;
use crate::task::{task_depth, task_runtime, task_tid};
use crate::tracked::{tracked_slot, untrack};

/// `sched_process_exit(task, ...)`: accounts the exiting thread's last stint and untracks it,
/// so a new thread that reuses the id is never taken for a vCPU.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 0 of sched_process_exit is the exiting task.
    let task: *const u8 = unsafe { ctx.arg(0) };
    let tid = task_tid(task);
    let slot = tracked_slot(tid);
    if slot != 0 {
        switch_out(slot, task_runtime(task), task_depth(task));
        untrack(tid);
    }
    0
}
