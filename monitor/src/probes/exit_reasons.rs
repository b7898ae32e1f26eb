//! Names for KVM exit reasons, bounded to a documented set so label cardinality stays small.
//!
//! kvm_exit reports the hardware reason (VMX basic exit reason, or SVM exit code tagged with
//! `EXIT_REASON_SVM_FLAG`); kvm_userspace_exit reports the KVM_EXIT_* code handed to the VMM.
//! Reasons outside these tables are exported as `other`.

use monitor_common::kvm_exit::EXIT_REASON_SVM_FLAG;

/// The label for reasons not in the tables.
pub const OTHER: &str = "other";

/// VMX basic exit reasons worth telling apart on a GPU host (Intel SDM Vol. 3C, App. C).
const VMX: &[(u32, &str)] = &[
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

/// SVM exit codes (AMD APM Vol. 2, App. C), same meanings mapped to the same names.
const SVM: &[(u32, &str)] = &[
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
const USERSPACE: &[(u32, &str)] = &[
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

fn lookup(table: &[(u32, &'static str)], code: u32) -> &'static str {
    table
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, name)| *name)
        .unwrap_or(OTHER)
}

/// The label for a reason code from the given source (`kvm_exit` or `kvm_userspace_exit`).
pub fn name(source: &str, code: u32) -> &'static str {
    match source {
        "kvm_userspace_exit" => lookup(USERSPACE, code),
        _ if code & EXIT_REASON_SVM_FLAG != 0 => lookup(SVM, code & !EXIT_REASON_SVM_FLAG),
        _ => lookup(VMX, code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_vmx_svm_and_userspace_codes() {
        assert_eq!(name("kvm_exit", 30), "io_instruction");
        assert_eq!(name("kvm_exit", 48), "ept_violation");
        assert_eq!(
            name("kvm_exit", 0x7b | EXIT_REASON_SVM_FLAG),
            "io_instruction"
        );
        assert_eq!(
            name("kvm_exit", 0x400 | EXIT_REASON_SVM_FLAG),
            "ept_violation"
        );
        assert_eq!(name("kvm_userspace_exit", 2), "io");
        assert_eq!(name("kvm_userspace_exit", 6), "mmio");
    }

    #[test]
    fn unknown_codes_are_other_so_labels_stay_bounded() {
        assert_eq!(name("kvm_exit", 9999), OTHER);
        assert_eq!(name("kvm_exit", 30 | EXIT_REASON_SVM_FLAG), OTHER);
        assert_eq!(name("kvm_userspace_exit", 1234), OTHER);
        let labels: std::collections::BTreeSet<_> =
            (0..2048).map(|c| name("kvm_exit", c)).collect();
        assert!(labels.len() <= VMX.len() + 1);
    }
}
