//! Types and names shared by pinsight's eBPF probes and its userspace daemon.
//!
//! Everything here is `#[repr(C)]` and plain data: the kernel side writes it into maps and the
//! daemon reads it back byte for byte. With the `user` feature the types implement `aya::Pod`.
#![no_std]

/// Marks a socket that is not known yet (a thread that has not run since it was tracked) or a
/// CPU that the topology does not describe.
pub const UNKNOWN_SOCKET: u32 = u32::MAX;

/// Map names, as they appear in the object file and in `bpftool map` output.
pub mod maps {
    /// `Array<u64>`: one bit per thread id; a set bit means "this tid is a tracked vCPU thread".
    /// Checked on every context switch before anything else, so untracked threads cost one
    /// inlined array access and no hash lookup.
    pub const TRACKED_TIDS: &str = "TRACKED_TIDS";
    /// `PerCpuHashMap<u32 tid, CpuRun>`: a tracked thread's run time and moves, one value per
    /// CPU. Per-CPU values need no atomics, and a thread's stint starts and ends on one CPU.
    pub const RUN_NS: &str = "RUN_NS";
    /// `Array<u32>`: socket id of each CPU, written by userspace from the (possibly fixture) topology.
    pub const CPU_SOCKET: &str = "CPU_SOCKET";
    /// `PerCpuHashMap<ExitKey, u64>`: KVM exits of a tracked thread per reason, one value per CPU.
    pub const KVM_EXITS: &str = "KVM_EXITS";
    /// `PerCpuArray<u64>` indexed by [`MapError`]: failed map updates in the probes.
    pub const MAP_ERRORS: &str = "MAP_ERRORS";
}

/// Program names (`<category>_<event>`), as `bpftool prog` lists them.
pub mod programs {
    /// tp_btf on sched_switch: run-time accounting and cross-socket migrations.
    pub const SCHED_SWITCH: &str = "sched_switch";
    /// tracepoint sched:sched_migrate_task: counts moves of tracked threads between sockets.
    pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
    /// tp_btf on sched_process_exit: stops tracking a thread the moment it exits.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// Tracepoint kvm:kvm_exit (bare-metal VMX/SVM hosts), reason = hardware exit reason.
    pub const KVM_EXIT: &str = "kvm_exit";
    /// tp_btf on kvm_userspace_exit (fires under nested KVM too), reason = KVM_EXIT_* code.
    pub const KVM_USERSPACE_EXIT: &str = "kvm_userspace_exit";
    /// Benchmark only: an empty tp_btf program on sched_switch, the floor the kernel imposes.
    pub const SCHED_SWITCH_EMPTY: &str = "sched_switch_empty";
}

/// Names of read-only globals the daemon sets at load time (`EbpfLoader::set_global`).
pub mod globals {
    /// Byte offset of `pid` in `struct task_struct`, read from the running kernel's BTF.
    pub const TASK_PID_OFFSET: &str = "TASK_PID_OFFSET";
    /// Byte offset of `se.sum_exec_runtime` in `struct task_struct`: the kernel's own run-time
    /// clock of the task (what /proc/TID/schedstat shows), up to date at every switch.
    pub const TASK_RUNTIME_OFFSET: &str = "TASK_RUNTIME_OFFSET";
    /// Byte offset of `exit_reason` in the kvm:kvm_exit tracepoint record (tracefs format).
    pub const KVM_EXIT_REASON_OFFSET: &str = "KVM_EXIT_REASON_OFFSET";
    /// Byte offset of `isa` in the kvm:kvm_exit tracepoint record (1 = VMX, 2 = SVM).
    pub const KVM_EXIT_ISA_OFFSET: &str = "KVM_EXIT_ISA_OFFSET";
    /// Byte offsets of `pid`, `orig_cpu` and `dest_cpu` in the sched:sched_migrate_task record.
    pub const MIGRATE_PID_OFFSET: &str = "MIGRATE_PID_OFFSET";
    /// See [`MIGRATE_PID_OFFSET`].
    pub const MIGRATE_ORIG_CPU_OFFSET: &str = "MIGRATE_ORIG_CPU_OFFSET";
    /// See [`MIGRATE_PID_OFFSET`].
    pub const MIGRATE_DEST_CPU_OFFSET: &str = "MIGRATE_DEST_CPU_OFFSET";
    /// Byte offset of `reason` in the kvm:kvm_userspace_exit tracepoint record.
    pub const KVM_USERSPACE_EXIT_REASON_OFFSET: &str = "KVM_USERSPACE_EXIT_REASON_OFFSET";
}

/// One CPU's slot of a tracked thread in [`maps::RUN_NS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuRun {
    /// Nanoseconds the thread ran on this CPU (closed stints).
    pub run_ns: u64,
    /// The thread's `se.sum_exec_runtime` when it went on this CPU (valid while `on_cpu`).
    pub runtime_at_switch_in: u64,
    /// 1 while the thread is on this CPU.
    pub on_cpu: u64,
    /// Moves of the thread between sockets, counted on the CPU that did the move.
    pub cross_socket_migrations: u64,
}

/// Key of [`maps::KVM_EXITS`]: a thread and an exit reason code in the source's own numbering.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExitKey {
    /// Thread id of the vCPU thread.
    pub tid: u32,
    /// Hardware exit reason (kvm_exit: VMX basic reason or SVM exit code, tagged with
    /// [`EXIT_REASON_SVM_FLAG`] on AMD) or the KVM_EXIT_* userspace reason.
    pub reason: u32,
}

/// Set in [`ExitKey::reason`] when a kvm_exit came from SVM (AMD), whose codes overlap VMX's.
pub const EXIT_REASON_SVM_FLAG: u32 = 1 << 31;

/// Indexes of [`maps::MAP_ERRORS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A RUN_NS insert failed (map full).
    RunNs = 0,
    /// A KVM_EXITS insert failed (map full).
    KvmExits = 1,
    /// A tracked thread had no RUN_NS entry when it went on CPU.
    MissingThread = 2,
}

/// Number of [`MapError`] slots.
pub const MAP_ERROR_SLOTS: u32 = 3;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: #[repr(C)] plain integers without padding holes that matter to the kernel;
    // any bit pattern is a valid value.
    unsafe impl aya::Pod for super::CpuRun {}
    // SAFETY: as for CpuRun.
    unsafe impl aya::Pod for super::ExitKey {}
}
