//! sched_switch / sched_process_exit / sched_migrate_task: on-CPU time of vCPU threads per
//! CPU, and their moves between sockets.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::PerCpuArray,
    programs::{BtfTracePointContext, TracePointContext},
};
use monitor_common::{CpuRun, MapError, UNKNOWN_SOCKET};

use crate::tracked::PASS_TO_PERF;
use crate::tracked::{count_map_error, task_runtime, task_tid, tracked_slot, untrack, CPU_SOCKET};

/// Per tracked thread (indexed by its slot), per CPU: run time, the stint in progress, socket
/// moves. A stint starts and ends on the same CPU, so switch-in and switch-out touch only this
/// CPU's value; an array, so the lookup is inlined rather than hashed.
#[map(name = "RUN_NS")]
static RUN_NS: PerCpuArray<CpuRun> = PerCpuArray::with_max_entries(1, 0);

/// Record offsets of sched:sched_migrate_task, from its tracefs format.
#[no_mangle]
static MIGRATE_PID_OFFSET: u32 = 12;
#[no_mangle]
static MIGRATE_ORIG_CPU_OFFSET: u32 = 20;
#[no_mangle]
static MIGRATE_DEST_CPU_OFFSET: u32 = 24;

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

/// `sched_process_exit(task, ...)`: accounts the exiting thread's last stint and untracks it,
/// so a new thread that reuses the id is never taken for a vCPU.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 0 of sched_process_exit is the exiting task.
    let task: *const u8 = unsafe { ctx.arg(0) };
    let tid = task_tid(task);
    let slot = tracked_slot(tid);
    if slot != 0 {
        switch_out(slot, task_runtime(task));
        untrack(tid);
    }
    0
}

/// sched:sched_migrate_task: a task moves from orig_cpu to dest_cpu. Rare next to switches,
/// so a classic tracepoint (whose layout tracefs gives us) costs little here.
// Written out instead of #[tracepoint]: aya-ebpf 0.1's macro always returns 0, which
// makes the kernel drop the event for every perf user of the tracepoint.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn sched_migrate_task(raw: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(raw);
    // SAFETY: offsets come from this kernel's tracefs format of sched:sched_migrate_task.
    let (tid, orig, dest) = unsafe {
        let at = |o: &u32| core::ptr::read_volatile(o) as usize;
        (
            ctx.read_at::<u32>(at(&MIGRATE_PID_OFFSET)).unwrap_or(0),
            ctx.read_at::<u32>(at(&MIGRATE_ORIG_CPU_OFFSET))
                .unwrap_or(u32::MAX),
            ctx.read_at::<u32>(at(&MIGRATE_DEST_CPU_OFFSET))
                .unwrap_or(u32::MAX),
        )
    };
    let slot = tracked_slot(tid);
    if slot == 0 {
        return PASS_TO_PERF;
    }
    let socket = |cpu: u32| CPU_SOCKET.get(cpu).copied().unwrap_or(UNKNOWN_SOCKET);
    let (from, to) = (socket(orig), socket(dest));
    if from != UNKNOWN_SOCKET && to != UNKNOWN_SOCKET && from != to {
        if let Some(run) = RUN_NS.get_ptr_mut(slot) {
            // SAFETY: this CPU's value, only written from this CPU.
            unsafe { (*run).cross_socket_migrations += 1 };
        }
    }
    PASS_TO_PERF
}

/// Benchmark only: the cheapest possible program on the same attach point, loaded the same way.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[inline(always)]
fn switch_out(slot: u32, runtime: u64) {
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
