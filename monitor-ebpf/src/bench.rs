//! Benchmark only: the cheapest possible programs on pinsight's attach points, loaded the same
//! way as the real ones, give the floor the kernel imposes on any program there. The daemon
//! never loads them; `monitor/examples/probe_cost/` attaches them beside pinsight's.

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

/// Does nothing, on the same attach point as `kvm_userspace_exit`.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn kvm_userspace_exit_empty(_raw: *mut core::ffi::c_void) -> u32 {
    PASS_TO_PERF
}
