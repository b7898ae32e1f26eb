//! sched_switch / sched_process_exit: on-CPU time of vCPU threads, per CPU, and cross-socket moves.

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::{btf_tracepoint, map},
    maps::PerCpuHashMap,
    programs::BtfTracePointContext,
};
use monitor_common::{MapError, UNKNOWN_SOCKET};

use crate::tracked::{count_map_error, is_tracked, task_tid, untrack, CPU_SOCKET, THREAD_STATE};

/// On-CPU nanoseconds per tracked thread; the per-CPU slots give the split by CPU.
#[map(name = "RUN_NS")]
static RUN_NS: PerCpuHashMap<u32, u64> = PerCpuHashMap::with_max_entries(1, 0);

/// `sched_switch(preempt, prev, next, prev_state)`: closes prev's stint, opens next's.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 1 and 2 of sched_switch are the prev and next task_struct pointers.
    let (prev, next): (*const u8, *const u8) = unsafe { (ctx.arg(1), ctx.arg(2)) };
    let prev_tid = task_tid(prev);
    let next_tid = task_tid(next);
    let prev_tracked = is_tracked(prev_tid);
    let next_tracked = is_tracked(next_tid);
    if !prev_tracked && !next_tracked {
        return 0;
    }
    // SAFETY: plain helper calls without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if prev_tracked {
        switch_out(prev_tid, now);
    }
    if next_tracked {
        switch_in(next_tid, now);
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
    if is_tracked(tid) {
        // SAFETY: plain helper call.
        switch_out(tid, unsafe { bpf_ktime_get_ns() });
        untrack(tid);
    }
    0
}

/// Benchmark only: the cheapest possible program on the same attach point, loaded the same way.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

#[inline(always)]
fn switch_out(tid: u32, now: u64) {
    let Some(state) = THREAD_STATE.get_ptr_mut(&tid) else {
        return;
    };
    // SAFETY: pointer from a successful lookup; a thread's own switches are serialised by the
    // scheduler, so no other CPU writes this entry concurrently.
    let since = unsafe { (*state).on_cpu_since_ns };
    if since == 0 || now < since {
        return;
    }
    unsafe { (*state).on_cpu_since_ns = 0 };
    let ran = now - since;
    match RUN_NS.get_ptr_mut(&tid) {
        // SAFETY: this CPU's slot, only written from this CPU.
        Some(total) => unsafe { *total += ran },
        None => {
            if RUN_NS.insert(&tid, &ran, 0).is_err() {
                count_map_error(MapError::RunNs);
            }
        }
    }
}

#[inline(always)]
fn switch_in(tid: u32, now: u64) {
    let Some(state) = THREAD_STATE.get_ptr_mut(&tid) else {
        count_map_error(MapError::ThreadState);
        return;
    };
    // SAFETY: plain helper call.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let socket = CPU_SOCKET.get(cpu).copied().unwrap_or(UNKNOWN_SOCKET);
    // SAFETY: pointer from a successful lookup; see switch_out.
    unsafe {
        (*state).on_cpu_since_ns = now;
        (*state).last_cpu = cpu;
        if socket != UNKNOWN_SOCKET {
            let last = (*state).last_socket;
            if last != UNKNOWN_SOCKET && last != socket {
                (*state).cross_socket_migrations += 1;
            }
            (*state).last_socket = socket;
        }
    }
}
