//! Benchmark only: the cheapest possible programs on pinsight's attach points, loaded the same
//! way as the real ones, give the floor the kernel imposes on any program there. The daemon
//! never loads them; the cost examples (`monitor/examples/`) attach them beside pinsight's.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::tracked::PASS_TO_PERF;

/// Does nothing, on the same attach point as `sched_switch`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// Does nothing, on the same attach point as `kvm_exit` (a classic tracepoint, returning what
/// pinsight's returns).
#[no_mangle]
#[link_section = "tracepoint"]
pub fn kvm_exit_empty(_raw: *mut core::ffi::c_void) -> u32 {
    PASS_TO_PERF
}

/// Does nothing, on the same attach point as `kvm_userspace_exit` (a raw tracepoint).
#[no_mangle]
#[link_section = "raw_tp"]
pub fn kvm_userspace_exit_empty(_args: *mut core::ffi::c_void) -> u32 {
    0
}

/// Does nothing, on task:task_prctl_unknown as a classic tracepoint. With its raw twin below,
/// `examples/tracepoint_path.rs` measures what the kernel's building of a classic record costs
/// per event, on a tracepoint a benchmark can fire millions of times a second.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn prctl_unknown_classic_empty(_raw: *mut core::ffi::c_void) -> u32 {
    PASS_TO_PERF
}

/// Does nothing, on task_prctl_unknown as a raw tracepoint.
#[no_mangle]
#[link_section = "raw_tp"]
pub fn prctl_unknown_raw_empty(_args: *mut core::ffi::c_void) -> u32 {
    0
}

/// Does nothing, on the same attach point as `sched_migrate_task`.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}
