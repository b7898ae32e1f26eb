//! Benchmark only: the cheapest possible program on sched_switch, loaded the same way as the
//! real one (tp_btf), gives the floor the kernel imposes on any program there. The daemon never
//! loads it; `monitor/examples/probe_cost.rs` attaches it beside pinsight's.

use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

/// Does nothing, on the same attach point as `sched_switch`.
#[btf_tracepoint(function = "sched_switch")]
pub fn sched_switch_empty(_ctx: BtfTracePointContext) -> i32 {
    0
}
