//! sched_switch: run time of tracked threads per CPU, the probe everything else depends on.
//!
//! Owns the task_struct layout that the tp_btf programs read (sched_process_exit reads the
//! same two fields) and the size of RUN_NS and THREAD_RUN, the per-slot run-time arrays.

use monitor_common::programs;
use monitor_common::sched_switch::{TASK_DEPTH_OFFSET, TASK_PID_OFFSET, TASK_RUNTIME_OFFSET};

use super::btf::{BtfError, KernelBtf};
use super::hook::{Hook, Probe};

/// Required: without run time per CPU there is nothing to report.
pub(super) const PROBE: Probe = Probe {
    program: programs::SCHED_SWITCH,
    hook: Hook::BtfTracepoint("sched_switch"),
    without_it: None,
};

/// The task_struct layout the programs read, from this kernel's BTF.
pub(super) struct TaskLayout {
    /// The globals: offsets of `pid`, `se.sum_exec_runtime` and `se.depth`.
    pub globals: Vec<(&'static str, u32)>,
    /// Whether `se.depth` exists (group scheduling); without it the depth global points at
    /// `pid` and the depth filter stays open.
    pub has_depth: bool,
}

/// The offsets of `task_struct.pid`, `task_struct.se.sum_exec_runtime` and
/// `task_struct.se.depth` in this kernel, as the globals the programs read.
pub(super) fn task_layout(btf: &KernelBtf) -> Result<TaskLayout, BtfError> {
    let pid = btf.member_offset("task_struct", "pid")?;
    let se = btf.member_offset("task_struct", "se")?;
    let runtime = se + btf.member_offset("sched_entity", "sum_exec_runtime")?;
    let depth = btf.member_offset("sched_entity", "depth").map(|d| se + d);
    if let Err(e) = &depth {
        tracing::info!("{e}: no group scheduling in this kernel, so no depth filter");
    }
    Ok(TaskLayout {
        has_depth: depth.is_ok(),
        globals: vec![
            (TASK_PID_OFFSET, pid),
            (TASK_RUNTIME_OFFSET, runtime),
            (TASK_DEPTH_OFFSET, depth.unwrap_or(pid)),
        ],
    })
}

/// Entries of RUN_NS and THREAD_RUN: one per slot, and slot 0 (meaning "untracked") is never
/// handed out.
pub(super) fn slot_entries(max_threads: u32) -> u32 {
    max_threads + 1
}
