//! kvm_exit and kvm_userspace_exit: KVM exits of tracked threads per reason, one map for both
//! sources (the daemon attaches one of them and says which).
//!
//! Both are classic tracepoints: their record layouts come from tracefs at load time.

/// `PerCpuHashMap<ExitKey, u64>`: exits of a tracked thread per reason, one value per CPU
/// (the split by CPU gives the exits' locality).
pub const KVM_EXITS: &str = "KVM_EXITS";

/// Global: byte offset of `exit_reason` in the kvm:kvm_exit record.
pub const KVM_EXIT_REASON_OFFSET: &str = "KVM_EXIT_REASON_OFFSET";
/// Global: byte offset of `isa` in the kvm:kvm_exit record (1 = VMX, 2 = SVM).
pub const KVM_EXIT_ISA_OFFSET: &str = "KVM_EXIT_ISA_OFFSET";
/// Global: byte offset of `reason` in the kvm:kvm_userspace_exit record.
pub const KVM_USERSPACE_EXIT_REASON_OFFSET: &str = "KVM_USERSPACE_EXIT_REASON_OFFSET";

/// Key of [`KVM_EXITS`]: a thread and an exit reason code in the source's own numbering.
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

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and two u32s, so no padding; any bit pattern is a valid value.
unsafe impl aya::Pod for ExitKey {}
