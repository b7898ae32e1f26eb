//! sched_process_exit: closes an exiting tracked thread's last stint and untracks it at once,
//! so a new thread that reuses the id is never taken for a vCPU. It reads the same
//! task_struct fields as sched_switch (their offsets are set there).

use monitor_common::programs;

use super::hook::{Hook, Probe};

/// Optional: the daemon's rescan notices exited threads too, only later.
pub(super) const PROBE: Probe = Probe {
    program: programs::SCHED_PROCESS_EXIT,
    hook: Hook::BtfTracepoint("sched_process_exit"),
    without_it: Some("exited vCPU threads are untracked at the next rescan instead"),
};
