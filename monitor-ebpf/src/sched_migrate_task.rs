//! sched_migrate_task: moves of tracked vCPU threads from CPU to CPU, by topology scope.

use aya_ebpf::{
    macros::{btf_tracepoint, map},
    maps::Array,
    programs::BtfTracePointContext,
};
use monitor_common::sched_migrate_task::{CpuTopo, MoveScope};

use crate::sched_switch::RUN_NS;
use crate::task::{task_cpu, task_tid};
use crate::tracked::tracked_slot;

/// Where every possible CPU sits, from the daemon's topology (size set at load time).
#[map(name = "CPU_TOPO")]
pub static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(1, 0);

/// `sched_migrate_task(p, dest_cpu)`: a task moves from its CPU to dest_cpu. A tp_btf program,
/// as sched_switch: it fires for every move of every task on the host, and a classic
/// tracepoint would have the kernel build a record first, ~3x the cost of the raw path here
/// (BENCHMARKS.md, "Classic or raw tracepoints"). Untracked tasks stop after one load and
/// one array access; for a tracked thread, two array lookups and a few compares.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task(ctx: BtfTracePointContext) -> i32 {
    // SAFETY: argument 0 of sched_migrate_task is the task, argument 1 the destination CPU.
    let (task, dest): (*const u8, i32) = unsafe { (ctx.arg(0), ctx.arg(1)) };
    let slot = tracked_slot(task_tid(task));
    if slot == 0 {
        return 0;
    }
    // The tracepoint fires before the task's CPU is set to dest: it is still the origin.
    let orig = task_cpu(task);
    let topo = |cpu: u32| CPU_TOPO.get(cpu).copied().unwrap_or(CpuTopo::UNKNOWN);
    let scope = MoveScope::between(&topo(orig), &topo(dest as u32));
    if let Some(run) = RUN_NS.get_ptr_mut(slot) {
        // SAFETY: this CPU's value, only written from this CPU.
        if let Some(moves) = unsafe { (*run).moves.get_mut(scope as usize) } {
            *moves += 1;
        }
    }
    0
}
