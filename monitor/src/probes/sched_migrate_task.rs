//! sched_migrate_task: moves of tracked threads from CPU to CPU, by scope ([`MoveScope`]).
//! A tp_btf program, like sched_switch: it reads the task's id and CPU (the move's origin)
//! from the task, at offsets from this kernel's BTF.

use monitor_common::programs;
use monitor_common::sched_migrate_task::{MoveScope, MOVE_SCOPES};
use serde::{Deserialize, Serialize};

use super::btf::{BtfError, KernelBtf};
use super::hook::{Hook, Probe};

/// Optional: run time per socket is still right without it; only the move count is lost.
pub(super) const PROBE: Probe = Probe {
    program: programs::SCHED_MIGRATE_TASK,
    hook: Hook::BtfTracepoint("sched_migrate_task"),
    without_it: Some("moves between CPUs (migrations) will not be counted"),
};

/// The byte offset of a task's CPU in `struct task_struct`: `thread_info.cpu` where the
/// thread_info is in the task (x86 and arm64 since 5.16), else `cpu`.
pub(super) fn task_cpu_offset(btf: &KernelBtf) -> Result<u32, BtfError> {
    let in_thread_info = btf
        .member_offset("task_struct", "thread_info")
        .and_then(|info| Ok(info + btf.member_offset("thread_info", "cpu")?));
    in_thread_info.or_else(|_| btf.member_offset("task_struct", "cpu"))
}

/// Moves of a thread from CPU to CPU, by scope: how far each went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Moves {
    /// To an SMT sibling (same core).
    pub smt: u64,
    /// To another core of the same NUMA node.
    pub core: u64,
    /// To another NUMA node of the same socket.
    pub node: u64,
    /// To another socket.
    pub socket: u64,
    /// From or to a CPU the topology does not describe.
    pub unknown: u64,
}

impl Moves {
    /// Counts as the probe keeps them, indexed by [`MoveScope`].
    pub fn from_counts(counts: &[u64; MOVE_SCOPES]) -> Moves {
        let mut moves = Moves::default();
        for scope in MoveScope::ALL {
            *moves.get_mut(scope) = counts[scope as usize];
        }
        moves
    }

    /// The moves of `scope`.
    pub fn get(&self, scope: MoveScope) -> u64 {
        match scope {
            MoveScope::Smt => self.smt,
            MoveScope::Core => self.core,
            MoveScope::Node => self.node,
            MoveScope::Socket => self.socket,
            MoveScope::Unknown => self.unknown,
        }
    }

    fn get_mut(&mut self, scope: MoveScope) -> &mut u64 {
        match scope {
            MoveScope::Smt => &mut self.smt,
            MoveScope::Core => &mut self.core,
            MoveScope::Node => &mut self.node,
            MoveScope::Socket => &mut self.socket,
            MoveScope::Unknown => &mut self.unknown,
        }
    }

    /// Adds the moves made from `earlier` to `now` (counters only grow; a smaller reading,
    /// as from a reused slot, adds nothing).
    pub fn add_since(&mut self, earlier: &Moves, now: &Moves) {
        for scope in MoveScope::ALL {
            *self.get_mut(scope) += now.get(scope).saturating_sub(earlier.get(scope));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::btf::fixture;
    use super::*;

    #[test]
    fn the_task_cpu_is_thread_info_cpu_where_the_task_has_it_else_task_cpu() {
        // x86 and arm64 since 5.16: thread_info first in the task, cpu in it.
        let since_5_16 = fixture(&[
            ("thread_info", &[("flags", 0), ("cpu", 20)]),
            ("task_struct", &[("thread_info", 0), ("pid", 1264)]),
        ]);
        assert_eq!(task_cpu_offset(&since_5_16).unwrap(), 20);
        // Before 5.16 (or no thread_info in the task): task_struct.cpu.
        let before = fixture(&[
            ("thread_info", &[("flags", 0)]),
            ("task_struct", &[("cpu", 68), ("pid", 1200)]),
        ]);
        assert_eq!(task_cpu_offset(&before).unwrap(), 68);
        // Neither: an error naming the member, so the probe is skipped with it.
        let neither = fixture(&[("task_struct", &[("pid", 1200)])]);
        let err = task_cpu_offset(&neither).unwrap_err().to_string();
        assert!(err.contains("task_struct") && err.contains("cpu"), "{err}");
    }

    #[test]
    fn counts_land_in_their_scope_and_deltas_add_per_scope() {
        let before = Moves::from_counts(&[1, 2, 3, 4, 5]);
        assert_eq!((before.smt, before.node, before.unknown), (1, 3, 5));
        let now = Moves::from_counts(&[1, 7, 3, 10, 0]);
        let mut total = Moves::default();
        total.add_since(&before, &now);
        assert_eq!(
            total,
            Moves {
                core: 5,
                socket: 6,
                ..Moves::default()
            }
        );
    }
}
