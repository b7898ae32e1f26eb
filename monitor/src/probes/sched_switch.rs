//! sched_switch: run time of tracked threads per CPU, the probe everything else depends on.
//!
//! Owns the task_struct layout that the tp_btf programs read (sched_process_exit reads the
//! same two fields) and the size of RUN_NS and THREAD_RUN, the per-slot run-time arrays.

use monitor_common::programs;
use monitor_common::sched_switch::{TASK_PID_OFFSET, TASK_RUNTIME_OFFSET};

use super::btf::{BtfError, KernelBtf};
use super::hook::{Hook, Probe};

/// Required: without run time per CPU there is nothing to report.
pub(super) const PROBE: Probe = Probe {
    program: programs::SCHED_SWITCH,
    hook: Hook::BtfTracepoint("sched_switch"),
    without_it: None,
};

/// The offsets of `task_struct.pid` and `task_struct.se.sum_exec_runtime` in this kernel, as
/// the globals the programs read.
pub(super) fn globals(btf: &KernelBtf) -> Result<Vec<(&'static str, u32)>, BtfError> {
    let pid = btf.member_offset("task_struct", "pid")?;
    let runtime = btf.member_offset("task_struct", "se")?
        + btf.member_offset("sched_entity", "sum_exec_runtime")?;
    Ok(vec![(TASK_PID_OFFSET, pid), (TASK_RUNTIME_OFFSET, runtime)])
}

/// Entries of RUN_NS and THREAD_RUN: one per slot, and slot 0 (meaning "untracked") is never
/// handed out.
pub(super) fn slot_entries(max_threads: u32) -> u32 {
    max_threads + 1
}
