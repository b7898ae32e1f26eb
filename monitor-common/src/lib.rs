//! Types and names shared by pinsight's eBPF probes and its userspace daemon.
//!
//! Everything here is `#[repr(C)]` plain data or a name: the kernel side writes the types into
//! maps and the daemon reads them back byte for byte. With the `user` feature the types
//! implement `aya::Pod`. One module per probe that has something to share ([`sched_switch`],
//! [`sched_migrate_task`], [`kvm_exit`]); [`tracked`] holds what every probe uses.
#![cfg_attr(not(test), no_std)]

pub mod kvm_exit;
pub mod sched_migrate_task;
pub mod sched_switch;
pub mod tracked;

/// Program names (`<category>_<event>`), as `bpftool prog` lists them (cut to 15 characters
/// by the kernel) and as `pinsight_probe_attached{probe=...}` labels them. Kept in one list
/// because they are an interface: dashboards, alerts and tests use them.
pub mod programs {
    /// tp_btf on sched_switch: run-time accounting of tracked threads per CPU.
    pub const SCHED_SWITCH: &str = "sched_switch";
    /// tp_btf on sched_migrate_task: counts moves of tracked threads between CPUs, by
    /// topology scope.
    pub const SCHED_MIGRATE_TASK: &str = "sched_migrate_task";
    /// tp_btf on sched_process_exit: stops tracking a thread the moment it exits.
    pub const SCHED_PROCESS_EXIT: &str = "sched_process_exit";
    /// tp_btf on cgroup_attach_task: a tracked thread moved to another cgroup; lets its new
    /// depth through the filter (`sched_switch::TRACKED_DEPTHS`) at once.
    pub const CGROUP_ATTACH_TASK: &str = "cgroup_attach_task";
    /// Tracepoint kvm:kvm_exit (bare-metal VMX/SVM hosts), reason = hardware exit reason.
    pub const KVM_EXIT: &str = "kvm_exit";
    /// Raw tracepoint kvm_userspace_exit (fires under nested KVM too), reason = KVM_EXIT_* code.
    pub const KVM_USERSPACE_EXIT: &str = "kvm_userspace_exit";
    /// Benchmark only: an empty tp_btf program on sched_switch, the floor the kernel imposes.
    /// The daemon never loads it; `examples/probe_cost/` does.
    pub const SCHED_SWITCH_EMPTY: &str = "sched_switch_empty";
    /// Benchmark only: an empty tp_btf program on sched_migrate_task, the floor for
    /// [`SCHED_MIGRATE_TASK`] (`examples/migrate_cost.rs`).
    pub const SCHED_MIGRATE_TASK_EMPTY: &str = "sched_migrate_task_empty";
    /// Benchmark only: an empty program on kvm:kvm_exit, the floor for [`KVM_EXIT`].
    pub const KVM_EXIT_EMPTY: &str = "kvm_exit_empty";
    /// Benchmark only: an empty raw tracepoint program on kvm_userspace_exit, the floor for
    /// [`KVM_USERSPACE_EXIT`].
    pub const KVM_USERSPACE_EXIT_EMPTY: &str = "kvm_userspace_exit_empty";
}
