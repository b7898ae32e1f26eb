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
    /// `HashMap<u32 tid, ThreadState>`: per tracked thread state (when it went on CPU, where).
    pub const THREAD_STATE: &str = "THREAD_STATE";
    /// `PerCpuHashMap<u32 tid, u64>`: on-CPU nanoseconds of a tracked thread, one value per CPU.
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
    /// Byte offset of `exit_reason` in the kvm:kvm_exit tracepoint record (tracefs format).
    pub const KVM_EXIT_REASON_OFFSET: &str = "KVM_EXIT_REASON_OFFSET";
    /// Byte offset of `isa` in the kvm:kvm_exit tracepoint record (1 = VMX, 2 = SVM).
    pub const KVM_EXIT_ISA_OFFSET: &str = "KVM_EXIT_ISA_OFFSET";
    /// Byte offset of `reason` in the kvm:kvm_userspace_exit tracepoint record.
    pub const KVM_USERSPACE_EXIT_REASON_OFFSET: &str = "KVM_USERSPACE_EXIT_REASON_OFFSET";
}

/// Per tracked vCPU thread state, kept by the sched_switch program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadState {
    /// `bpf_ktime_get_ns()` when the thread last went on a CPU; 0 while it is off CPU.
    pub on_cpu_since_ns: u64,
    /// Moves of the thread from one socket to another, counted when it goes on CPU.
    pub cross_socket_migrations: u64,
    /// Socket it last ran on, or [`UNKNOWN_SOCKET`].
    pub last_socket: u32,
    /// CPU it last ran on (u32::MAX before it has run).
    pub last_cpu: u32,
}

impl ThreadState {
    /// State of a thread that has just been tracked and has not run since.
    pub const fn new() -> Self {
        ThreadState {
            on_cpu_since_ns: 0,
            cross_socket_migrations: 0,
            last_socket: UNKNOWN_SOCKET,
            last_cpu: u32::MAX,
        }
    }
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
    /// A run-time update of RUN_NS failed (map full).
    RunNs = 0,
    /// A KVM_EXITS insert failed (map full).
    KvmExits = 1,
    /// A THREAD_STATE update failed.
    ThreadState = 2,
}

/// Number of [`MapError`] slots.
pub const MAP_ERROR_SLOTS: u32 = 3;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: both are #[repr(C)] plain integers without padding holes that matter to the
    // kernel; any bit pattern is a valid value.
    unsafe impl aya::Pod for super::ThreadState {}
    unsafe impl aya::Pod for super::ExitKey {}
}
