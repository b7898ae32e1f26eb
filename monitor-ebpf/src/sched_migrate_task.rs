//! sched_migrate_task: moves of tracked vCPU threads from CPU to CPU, by topology scope.

use aya_ebpf::{macros::map, maps::Array, programs::TracePointContext};
use monitor_common::sched_migrate_task::{CpuTopo, MoveScope};

use crate::sched_switch::RUN_NS;
use crate::tracked::{tracked_slot, PASS_TO_PERF};

/// Where every possible CPU sits, from the daemon's topology (size set at load time).
#[map(name = "CPU_TOPO")]
pub static CPU_TOPO: Array<CpuTopo> = Array::with_max_entries(1, 0);

/// Record offsets of sched:sched_migrate_task, from its tracefs format (set at load time;
/// these defaults are the layout of every kernel since 5.x).
#[no_mangle]
static MIGRATE_PID_OFFSET: u32 = 12;
#[no_mangle]
static MIGRATE_ORIG_CPU_OFFSET: u32 = 20;
#[no_mangle]
static MIGRATE_DEST_CPU_OFFSET: u32 = 24;

/// sched:sched_migrate_task: a task moves from orig_cpu to dest_cpu. Rare next to switches,
/// so a classic tracepoint (whose layout tracefs gives us) costs little here; for a tracked
/// thread the work is two array lookups and a few compares.
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
    let topo = |cpu: u32| CPU_TOPO.get(cpu).copied().unwrap_or(CpuTopo::UNKNOWN);
    let scope = MoveScope::between(&topo(orig), &topo(dest));
    if let Some(run) = RUN_NS.get_ptr_mut(slot) {
        // SAFETY: this CPU's value, only written from this CPU.
        if let Some(moves) = unsafe { (*run).moves.get_mut(scope as usize) } {
            *moves += 1;
        }
    }
    PASS_TO_PERF
}
