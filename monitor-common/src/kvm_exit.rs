//! kvm_exit and kvm_userspace_exit: KVM exits of tracked threads per reason, one map for both
//! sources (the daemon attaches one of them and says which).
//!
//! Both are classic tracepoints: their record layouts come from tracefs at load time.
//!
//! The counters are a per-CPU array indexed by the thread's slot (as `RUN_NS`), each value an
//! array of counts indexed by a small *reason index*: the position of the reason's label in
//! [`HW_EXIT_LABELS`] (kvm_exit) or [`USERSPACE_EXIT_LABELS`] (kvm_userspace_exit), 0 being
//! `other`. The source's codes go to an index through the tables below, built at compile time
//! from the (code, label) lists, so an exit costs the probe one table load, one array lookup
//! and one increment: no hash, no insert, nothing that can fill up. Reasons outside the lists
//! count as `other`, which is also what the metrics called them before.

/// `PerCpuArray<ExitCounts>` indexed by a tracked thread's slot (`max_threads + 1` entries,
/// slot 0 never handed out); one value per CPU gives the exits' locality.
pub const KVM_EXITS: &str = "KVM_EXITS";

/// Global: byte offset of `exit_reason` in the kvm:kvm_exit record.
pub const KVM_EXIT_REASON_OFFSET: &str = "KVM_EXIT_REASON_OFFSET";
/// Global: byte offset of `isa` in the kvm:kvm_exit record (1 = VMX, 2 = SVM).
pub const KVM_EXIT_ISA_OFFSET: &str = "KVM_EXIT_ISA_OFFSET";

/// The reason index of reasons outside the tables, in both sources.
pub const OTHER_INDEX: usize = 0;
/// The label of [`OTHER_INDEX`].
pub const OTHER_LABEL: &str = "other";

/// Labels of kvm_exit's reason indexes (VMX and SVM codes of the same meaning share one).
pub const HW_EXIT_LABELS: [&str; 18] = [
    OTHER_LABEL,
    "exception_nmi",
    "external_interrupt",
    "interrupt_window",
    "cpuid",
    "hlt",
    "vmcall",
    "cr_access",
    "io_instruction",
    "msr_read",
    "msr_write",
    "pause_instruction",
    "apic_access",
    "eoi_induced",
    "ept_violation",
    "ept_misconfig",
    "preemption_timer",
    "apic_write",
];

/// Labels of kvm_userspace_exit's reason indexes.
pub const USERSPACE_EXIT_LABELS: [&str; 13] = [
    OTHER_LABEL,
    "io",
    "hypercall",
    "hlt",
    "mmio",
    "shutdown",
    "fail_entry",
    "intr",
    "internal_error",
    "system_event",
    "ioapic_eoi",
    "x86_rdmsr",
    "x86_wrmsr",
];

/// Counters per reason index in one [`ExitCounts`]: room for the longer label list.
pub const EXIT_REASON_SLOTS: usize = HW_EXIT_LABELS.len();

/// VMX basic exit reasons worth telling apart on a GPU host (Intel SDM Vol. 3C, App. C).
pub const VMX_REASONS: [(u32, &str); 17] = [
    (0, "exception_nmi"),
    (1, "external_interrupt"),
    (7, "interrupt_window"),
    (10, "cpuid"),
    (12, "hlt"),
    (18, "vmcall"),
    (28, "cr_access"),
    (30, "io_instruction"),
    (31, "msr_read"),
    (32, "msr_write"),
    (40, "pause_instruction"),
    (44, "apic_access"),
    (45, "eoi_induced"),
    (48, "ept_violation"),
    (49, "ept_misconfig"),
    (52, "preemption_timer"),
    (56, "apic_write"),
];

/// SVM exit codes (AMD APM Vol. 2, App. C), same meanings mapped to the same labels.
pub const SVM_REASONS: [(u32, &str); 12] = [
    (0x040 + 14, "exception_nmi"),
    (0x060, "external_interrupt"),
    (0x064, "interrupt_window"),
    (0x072, "cpuid"),
    (0x078, "hlt"),
    (0x081, "vmcall"),
    (0x07b, "io_instruction"),
    (0x07c, "msr_read"), // SVM reports MSR reads and writes as one code
    (0x077, "pause_instruction"),
    (0x400, "ept_violation"), // nested page fault, the SVM twin of an EPT violation
    (0x401, "apic_access"),
    (0x402, "apic_access"),
];

/// KVM_EXIT_* codes of kvm_userspace_exit (include/uapi/linux/kvm.h).
pub const USERSPACE_REASONS: [(u32, &str); 12] = [
    (2, "io"),
    (3, "hypercall"),
    (5, "hlt"),
    (6, "mmio"),
    (8, "shutdown"),
    (9, "fail_entry"),
    (10, "intr"),
    (17, "internal_error"),
    (24, "system_event"),
    (26, "ioapic_eoi"),
    (29, "x86_rdmsr"),
    (30, "x86_wrmsr"),
];

/// VMX basic reasons below this have a table entry (the SDM defines fewer than 80).
pub const VMX_TABLE: usize = 128;
/// SVM codes below 0x100 have a table entry, and so do 0x400..0x410 (NPF, AVIC), after them.
pub const SVM_TABLE: usize = 0x110;
/// KVM_EXIT_* codes below this have a table entry (uapi defines fewer than 64).
pub const USERSPACE_TABLE: usize = 64;

/// Reason index of each VMX basic reason below [`VMX_TABLE`].
pub static VMX_INDEX: [u8; VMX_TABLE] = index_table(&VMX_REASONS, &HW_EXIT_LABELS, Family::Vmx);
/// Reason index of each SVM code, at its [`svm_key`].
pub static SVM_INDEX: [u8; SVM_TABLE] = index_table(&SVM_REASONS, &HW_EXIT_LABELS, Family::Svm);
/// Reason index of each KVM_EXIT_* code below [`USERSPACE_TABLE`].
pub static USERSPACE_INDEX: [u8; USERSPACE_TABLE] = index_table(
    &USERSPACE_REASONS,
    &USERSPACE_EXIT_LABELS,
    Family::Userspace,
);

/// Where a code sits in its family's table; None for codes beyond it (always `other`).
#[inline(always)]
pub const fn table_key(family: Family, code: u32) -> Option<usize> {
    let code = code as usize;
    match family {
        Family::Vmx if code < VMX_TABLE => Some(code),
        Family::Svm => svm_key(code),
        Family::Userspace if code < USERSPACE_TABLE => Some(code),
        _ => None,
    }
}

/// [`SVM_INDEX`] position of an SVM exit code: the dense low codes as they are, the
/// 0x400 block (nested page fault, AVIC) just after them.
#[inline(always)]
pub const fn svm_key(code: usize) -> Option<usize> {
    if code < 0x100 {
        Some(code)
    } else if code >= 0x400 && code < 0x410 {
        Some(code - 0x400 + 0x100)
    } else {
        None
    }
}

/// The numbering a reason code comes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// kvm_exit on Intel: VMX basic exit reason (the low 16 bits of the exit reason).
    Vmx,
    /// kvm_exit on AMD: SVM exit code.
    Svm,
    /// kvm_userspace_exit: KVM_EXIT_* code.
    Userspace,
}

/// The reason index of `code`: its label's position in the family's label list, or
/// [`OTHER_INDEX`]. What the probes do with their tables, as a plain function for userspace.
pub fn reason_index(family: Family, code: u32) -> usize {
    let table: &[u8] = match family {
        Family::Vmx => &VMX_INDEX,
        Family::Svm => &SVM_INDEX,
        Family::Userspace => &USERSPACE_INDEX,
    };
    match table_key(family, code) {
        Some(key) if key < table.len() => table[key] as usize,
        _ => OTHER_INDEX,
    }
}

/// Builds a family's code-to-index table; a label missing from `labels` or a code beyond the
/// table fails the build.
const fn index_table<const N: usize>(
    reasons: &[(u32, &str)],
    labels: &[&str],
    family: Family,
) -> [u8; N] {
    let mut table = [OTHER_INDEX as u8; N];
    let mut i = 0;
    while i < reasons.len() {
        let (code, label) = reasons[i];
        let Some(key) = table_key(family, code) else {
            panic!("a known exit reason code lies beyond its table");
        };
        table[key] = label_index(labels, label) as u8;
        i += 1;
    }
    table
}

/// Position of `label` in `labels` (compile time: a missing label fails the build).
const fn label_index(labels: &[&str], label: &str) -> usize {
    let mut i = 0;
    while i < labels.len() {
        if str_eq(labels[i], label) {
            return i;
        }
        i += 1;
    }
    panic!("an exit reason's label is missing from its label list")
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// A tracked thread's exits on one CPU, indexed by reason index.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitCounts {
    /// Exits per reason index (entries past the source's label list stay 0).
    pub by_reason: [u64; EXIT_REASON_SLOTS],
}

#[cfg(feature = "user")]
// SAFETY: #[repr(C)] and only u64s, so no padding; any bit pattern is a valid value.
unsafe impl aya::Pod for ExitCounts {}
