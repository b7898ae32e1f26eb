//! Names for KVM exit reasons, bounded to a documented set so label cardinality stays small.
//!
//! kvm_exit reports the hardware reason (VMX basic exit reason, or SVM exit code), and
//! kvm_userspace_exit the KVM_EXIT_* code handed to the VMM. The probes count by *reason
//! index* (`monitor_common::kvm_exit`): one per label of the source, `other` for every code
//! outside the tables. [`ThreadCounters::exits`](super::ThreadCounters) stays keyed by a
//! reason code, so it carries for each index [`code_of`] it: a code of that reason (for
//! kvm_exit in VMX numbering, whatever the host's ISA), or [`OTHER_CODE`].

use monitor_common::kvm_exit::{
    reason_index, Family, HW_EXIT_LABELS, OTHER_INDEX, OTHER_LABEL, SVM_REASONS,
    USERSPACE_EXIT_LABELS, USERSPACE_REASONS, VMX_REASONS,
};
use monitor_common::programs;

/// The label for reasons not in the tables.
pub const OTHER: &str = OTHER_LABEL;

/// Set on an SVM code given to [`name`] (`kvm_exit` source): SVM's codes overlap VMX's.
pub const SVM_FLAG: u32 = 1 << 31;

/// The code that stands for [`OTHER`] in both sources: no table has it.
pub const OTHER_CODE: u32 = u32::MAX;

/// Labels of `source`'s reason indexes (`kvm_exit` or `kvm_userspace_exit`).
pub fn labels(source: &str) -> &'static [&'static str] {
    if source == programs::KVM_USERSPACE_EXIT {
        &USERSPACE_EXIT_LABELS
    } else {
        &HW_EXIT_LABELS
    }
}

/// The label of reason index `index` of `source`; [`OTHER`] for an index beyond its list.
pub fn label(source: &str, index: usize) -> &'static str {
    labels(source).get(index).copied().unwrap_or(OTHER)
}

/// A reason code of `source` whose [`name`] is the label of `index`: the code that stands
/// for the index in [`ThreadCounters::exits`](super::ThreadCounters). [`OTHER_CODE`] for
/// `other` and for indexes beyond the list.
pub fn code_of(source: &str, index: usize) -> u32 {
    if index == OTHER_INDEX {
        return OTHER_CODE;
    }
    let wanted = label(source, index);
    let find = |reasons: &[(u32, &str)], flag: u32| {
        reasons
            .iter()
            .find(|(_, l)| *l == wanted)
            .map(|(code, _)| code | flag)
    };
    let code = if source == programs::KVM_USERSPACE_EXIT {
        find(&USERSPACE_REASONS, 0)
    } else {
        find(&VMX_REASONS, 0).or_else(|| find(&SVM_REASONS, SVM_FLAG))
    };
    code.unwrap_or(OTHER_CODE)
}

/// The label for a reason code from the given source (`kvm_exit` or `kvm_userspace_exit`);
/// kvm_exit codes with [`SVM_FLAG`] set are SVM codes.
pub fn name(source: &str, code: u32) -> &'static str {
    let (family, code) = if source == programs::KVM_USERSPACE_EXIT {
        (Family::Userspace, code)
    } else if code & SVM_FLAG != 0 {
        (Family::Svm, code & !SVM_FLAG)
    } else {
        (Family::Vmx, code)
    };
    label(source, reason_index(family, code))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const HW: &str = programs::KVM_EXIT;
    const USER: &str = programs::KVM_USERSPACE_EXIT;

    #[test]
    fn maps_vmx_svm_and_userspace_codes() {
        assert_eq!(name(HW, 30), "io_instruction");
        assert_eq!(name(HW, 48), "ept_violation");
        assert_eq!(name(HW, 0x7b | SVM_FLAG), "io_instruction");
        assert_eq!(name(HW, 0x400 | SVM_FLAG), "ept_violation");
        assert_eq!(name(USER, 2), "io");
        assert_eq!(name(USER, 6), "mmio");
    }

    #[test]
    fn every_known_reason_round_trips_through_its_index() {
        let families = [
            (HW, Family::Vmx, &VMX_REASONS[..], 0),
            (HW, Family::Svm, &SVM_REASONS[..], SVM_FLAG),
            (USER, Family::Userspace, &USERSPACE_REASONS[..], 0),
        ];
        for (source, family, reasons, flag) in families {
            for &(code, expected) in reasons {
                let index = reason_index(family, code);
                assert_ne!(index, OTHER_INDEX, "{family:?} code {code:#x} is known");
                assert_eq!(label(source, index), expected, "{family:?} {code:#x}");
                assert_eq!(name(source, code | flag), expected);
                // The code that stands for the index names the same reason.
                assert_eq!(name(source, code_of(source, index)), expected);
            }
        }
        // Every label but `other` has a code, and distinct labels distinct indexes.
        for source in [HW, USER] {
            for (index, l) in labels(source).iter().enumerate().skip(1) {
                assert_eq!(name(source, code_of(source, index)), *l, "{source} {l}");
            }
            let unique: BTreeSet<_> = labels(source).iter().collect();
            assert_eq!(unique.len(), labels(source).len(), "{source}");
        }
    }

    #[test]
    fn unknown_codes_go_to_other_and_are_exported_as_other() {
        let probes = [
            (Family::Vmx, 9999),
            (Family::Vmx, 127),
            (Family::Vmx, 2),
            (Family::Svm, 30),
            (Family::Svm, 0x403),
            (Family::Svm, 0x1000),
            (Family::Svm, u32::MAX),
            (Family::Userspace, 1234),
            (Family::Userspace, 0),
            (Family::Userspace, 63),
        ];
        for (family, code) in probes {
            assert_eq!(reason_index(family, code), OTHER_INDEX, "{family:?} {code}");
        }
        assert_eq!(name(HW, 9999), OTHER);
        assert_eq!(name(HW, 30 | SVM_FLAG), OTHER);
        assert_eq!(name(USER, 1234), OTHER);
        for source in [HW, USER] {
            assert_eq!(label(source, OTHER_INDEX), "other");
            assert_eq!(code_of(source, OTHER_INDEX), OTHER_CODE);
            assert_eq!(name(source, OTHER_CODE), "other");
            assert_eq!(label(source, 999), "other");
        }
    }

    #[test]
    fn labels_stay_bounded_and_fit_the_counters() {
        use monitor_common::kvm_exit::EXIT_REASON_SLOTS;
        for source in [HW, USER] {
            assert!(labels(source).len() <= EXIT_REASON_SLOTS);
        }
        let seen: BTreeSet<_> = (0..0x2000)
            .flat_map(|c| [name(HW, c), name(HW, c | SVM_FLAG), name(USER, c)])
            .collect();
        assert!(seen.len() <= HW_EXIT_LABELS.len() + USERSPACE_EXIT_LABELS.len());
        assert!(seen.contains(OTHER));
    }
}
