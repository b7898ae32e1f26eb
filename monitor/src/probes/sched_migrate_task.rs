//! sched_migrate_task: moves of tracked threads between sockets. A classic tracepoint, so its
//! record layout (pid, orig_cpu, dest_cpu) is read from tracefs at load time.

use monitor_common::programs;
use monitor_common::sched_migrate_task::{
    MIGRATE_DEST_CPU_OFFSET, MIGRATE_ORIG_CPU_OFFSET, MIGRATE_PID_OFFSET,
};

use super::hook::{Hook, Probe};
use super::tracefs_globals;

/// Optional: run time per socket is still right without it; only the move count is lost.
pub(super) const PROBE: Probe = Probe {
    program: programs::SCHED_MIGRATE_TASK,
    hook: Hook::Tracepoint {
        category: "sched",
        event: "sched_migrate_task",
    },
    without_it: Some("cross-socket migrations will not be counted"),
};

/// Record offsets from tracefs; a field tracefs does not give keeps the compiled-in default.
pub(super) fn globals() -> Vec<(&'static str, u32)> {
    tracefs_globals(
        "sched",
        "sched_migrate_task",
        &[
            (MIGRATE_PID_OFFSET, "pid"),
            (MIGRATE_ORIG_CPU_OFFSET, "orig_cpu"),
            (MIGRATE_DEST_CPU_OFFSET, "dest_cpu"),
        ],
    )
}
