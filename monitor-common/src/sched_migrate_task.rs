//! sched_migrate_task: moves of tracked threads from CPU to CPU, counted by the smallest
//! topology level the two CPUs share ([`MoveScope`]) in
//! [`crate::sched_switch::CpuRun::moves`].
//!
//! A tp_btf program: it reads the task's id and CPU from the task itself, at offsets from the
//! running kernel's BTF. The scope is decided in the kernel from [`CPU_TOPO`], which the daemon
//! fills from its (possibly fixture) topology: three id compares per move, no per-pair table.

/// Global: byte offset of the task's CPU in `struct task_struct` (`thread_info.cpu` since
/// 5.16, `cpu` before), read from the running kernel's BTF.
pub const TASK_CPU_OFFSET: &str = "TASK_CPU_OFFSET";

/// `Array<CpuTopo>`: where each possible CPU sits, written by the daemon; [`CpuTopo::UNKNOWN`]
/// for CPUs its topology does not describe.
pub const CPU_TOPO: &str = "CPU_TOPO";

/// An id in [`CpuTopo`] for a CPU the topology does not describe.
pub const UNKNOWN_ID: u32 = u32::MAX;

/// Where one CPU sits: ids that are equal for two CPUs exactly when they share that level.
/// Either all three are known or all are [`UNKNOWN_ID`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTopo {
    /// The core: the smallest CPU id among its SMT siblings (unique host-wide, unlike
    /// sysfs core_id, which repeats in every socket).
    pub core: u32,
    /// The NUMA node.
    pub node: u32,
    /// The socket (physical package).
    pub socket: u32,
}

impl CpuTopo {
    /// A CPU the topology does not describe.
    pub const UNKNOWN: CpuTopo = CpuTopo {
        core: UNKNOWN_ID,
        node: UNKNOWN_ID,
        socket: UNKNOWN_ID,
    };
}

/// How far a move went: the smallest topology level the two CPUs share. Also the index of
/// its counter in [`crate::sched_switch::CpuRun::moves`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveScope {
    /// To an SMT sibling: the same core (its L1 and L2 stay; L1TF flushing still empties L1).
    Smt = 0,
    /// To another core of the same NUMA node.
    Core = 1,
    /// To another NUMA node of the same socket (SNC / NPS hosts).
    Node = 2,
    /// To another socket.
    Socket = 3,
    /// From or to a CPU the topology does not describe.
    Unknown = 4,
}

/// Number of [`MoveScope`]s (the length of [`crate::sched_switch::CpuRun::moves`]).
pub const MOVE_SCOPES: usize = MoveScope::Unknown as usize + 1;

impl MoveScope {
    /// Every scope, in index order.
    pub const ALL: [MoveScope; MOVE_SCOPES] = [
        MoveScope::Smt,
        MoveScope::Core,
        MoveScope::Node,
        MoveScope::Socket,
        MoveScope::Unknown,
    ];

    /// The scope of a move from a CPU at `from` to one at `to`. Inlined into the probe: at
    /// most four compares.
    #[inline(always)]
    pub fn between(from: &CpuTopo, to: &CpuTopo) -> MoveScope {
        if from.socket == UNKNOWN_ID || to.socket == UNKNOWN_ID {
            MoveScope::Unknown
        } else if from.core == to.core {
            MoveScope::Smt
        } else if from.node == to.node {
            MoveScope::Core
        } else if from.socket == to.socket {
            MoveScope::Node
        } else {
            MoveScope::Socket
        }
    }

    /// The `scope` label of `pinsight_vcpu_migrations_total`.
    pub fn label(self) -> &'static str {
        match self {
            MoveScope::Smt => "smt",
            MoveScope::Core => "core",
            MoveScope::Node => "node",
            MoveScope::Socket => "socket",
            MoveScope::Unknown => "unknown",
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and three u32s, so no padding; any bit pattern is a valid value.
unsafe impl aya::Pod for CpuTopo {}
