//! How far a move from one CPU to another goes ([`MoveScope`]), and the per-CPU ids the
//! sched_migrate_task probe decides it from ([`CpuTopo`]).

use std::collections::BTreeMap;

use monitor_common::sched_migrate_task::{CpuTopo, MoveScope};

use super::{Cpu, Topology};

impl Topology {
    /// Where each online CPU sits, as the probe compares it: the core is named by its smallest
    /// SMT sibling, so ids are unique host-wide.
    pub fn cpu_topo(&self) -> BTreeMap<u32, CpuTopo> {
        self.cpus.values().map(|c| (c.id, cpu_topo(c))).collect()
    }

    /// The scope of a move from CPU `from` to CPU `to`: the smallest level they share, or
    /// [`MoveScope::Unknown`] when either is not an online CPU of this topology.
    pub fn move_scope(&self, from: u32, to: u32) -> MoveScope {
        let topo = |cpu| self.cpus.get(&cpu).map_or(CpuTopo::UNKNOWN, cpu_topo);
        MoveScope::between(&topo(from), &topo(to))
    }
}

fn cpu_topo(cpu: &Cpu) -> CpuTopo {
    CpuTopo {
        // A CPU is always among its own siblings; the fallback only guards a tree that says
        // otherwise, where the CPU is then a core of its own.
        core: cpu
            .siblings
            .iter()
            .next()
            .map_or(cpu.id, |first| first.min(cpu.id)),
        node: cpu.node,
        socket: cpu.socket,
    }
}
