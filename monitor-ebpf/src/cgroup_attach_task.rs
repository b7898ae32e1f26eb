//! cgroup_attach_task: a tracked thread moved to another cgroup, whose depth may not pass the
//! depth filter in front of the thread table yet (see
//! `monitor_common::sched_switch::TRACKED_DEPTHS`). The tracepoint fires once the move is
//! done, the scheduler's part (`cpu_cgroup_attach`) included, so `se.depth` is the new one.
//! For a whole process moved at once it names the leader; its threads all went to the same
//! cgroup, so the leader's depth is theirs (a process whose leader is not tracked is left to
//! the daemon's check for threads that ran unseen).

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::sched_switch::THREAD_RUN;
use crate::task::{task_depth, task_tid};
use crate::tracked::{let_depth_through, tracked_slot};

/// `cgroup_attach_task(dst_cgrp, path, task, threadgroup)`: lets the task's new depth through
/// the filter at once and records it as the thread's.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 2 of cgroup_attach_task is the task (the leader, for a process).
    let task: *const u8 = unsafe { ctx.arg(2) };
    let slot = tracked_slot(task_tid(task));
    if slot == 0 {
        return 0;
    }
    let depth = task_depth(task);
    if let Some(thread) = THREAD_RUN.get_ptr_mut(slot) {
        // SAFETY: from a successful array lookup; a racing switch of the thread writes the
        // same depth.
        unsafe { (*thread).depth = depth };
    }
    let_depth_through(depth);
    0
}
