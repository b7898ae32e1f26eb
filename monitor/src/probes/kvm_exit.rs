//! The KVM exit probe family: kvm:kvm_exit (every hardware exit, bare-metal VMX/SVM) and
//! kvm:kvm_userspace_exit (exits that reach the VMM; the only one that fires under nested
//! KVM). Both count into one map, so exactly one is attached: this file chooses which, owns
//! their tracefs record offsets, and reports the choice.

use std::path::Path;

use monitor_common::kvm_exit::{KVM_EXIT_ISA_OFFSET, KVM_EXIT_REASON_OFFSET};
use monitor_common::programs;
use serde::{Deserialize, Serialize};

use super::hook::{Hook, Probe};
use super::{tracefs_globals, Probes};

/// Which tracepoint feeds the KVM exit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvmExitSource {
    /// kvm_exit where it fires (bare-metal VMX/SVM), else kvm_userspace_exit.
    #[default]
    Auto,
    /// Every hardware exit with its VMX/SVM reason.
    KvmExit,
    /// Exits that reach the VMM (IO, MMIO, ...); fires under nested KVM too.
    KvmUserspaceExit,
    /// No KVM exit probe.
    Off,
}

/// The two sources, in the order [`exit_source_candidates`] names them.
const SOURCES: [Probe; 2] = [
    Probe {
        program: programs::KVM_EXIT,
        hook: Hook::Tracepoint {
            category: "kvm",
            event: "kvm_exit",
        },
        without_it: Some("KVM exit counts come from another source, if any"),
    },
    Probe {
        program: programs::KVM_USERSPACE_EXIT,
        hook: Hook::RawTracepoint {
            category: "kvm",
            event: "kvm_userspace_exit",
        },
        without_it: Some("KVM exit counts come from another source, if any"),
    },
];

/// The KVM vendor module loaded on this host, if any (kvm_intel, kvm_amd, kvm_pvm, ...).
pub fn kvm_vendor_module(module_dir: &Path) -> Option<&'static str> {
    ["kvm_intel", "kvm_amd", "kvm_pvm"]
        .into_iter()
        .find(|m| module_dir.join(m).exists())
}

/// Which exit tracepoints to try, in order. kvm:kvm_exit exists on every x86 kernel but only
/// fires under hardware-assisted KVM (VMX/SVM); under other flavours (nested PVM) only exits
/// that reach the VMM are visible, through kvm:kvm_userspace_exit.
pub fn exit_source_candidates(
    wanted: KvmExitSource,
    vendor: Option<&str>,
) -> &'static [&'static str] {
    match wanted {
        KvmExitSource::Off => &[],
        KvmExitSource::KvmExit => &[programs::KVM_EXIT],
        KvmExitSource::KvmUserspaceExit => &[programs::KVM_USERSPACE_EXIT],
        KvmExitSource::Auto => match vendor {
            Some("kvm_intel" | "kvm_amd") => &[programs::KVM_EXIT, programs::KVM_USERSPACE_EXIT],
            _ => &[programs::KVM_USERSPACE_EXIT],
        },
    }
}

/// Record offsets of kvm:kvm_exit from tracefs (compiled-in defaults where it is silent;
/// kvm_userspace_exit is a raw tracepoint, whose arguments need none).
pub(super) fn globals() -> Vec<(&'static str, u32)> {
    tracefs_globals(
        "kvm",
        "kvm_exit",
        &[
            (KVM_EXIT_REASON_OFFSET, "exit_reason"),
            (KVM_EXIT_ISA_OFFSET, "isa"),
        ],
    )
}

impl Probes {
    /// Prepares the sources this host and `kvm_exit_source` call for, in order; the others
    /// are reported as not selected.
    pub(super) fn prepare_exit_sources(&mut self, btf: &aya::Btf) {
        let wanted = self.options.kvm_exit_source;
        let vendor = kvm_vendor_module(Path::new("/sys/module"));
        let candidates = exit_source_candidates(wanted, vendor);
        tracing::info!(
            ?wanted,
            vendor = vendor.unwrap_or("none"),
            "KVM exit sources to try: {candidates:?}"
        );
        for &name in candidates {
            let Some(probe) = SOURCES.iter().find(|p| p.program == name) else {
                continue;
            };
            match probe.prepare(&mut self.ebpf, btf) {
                Ok(()) => {
                    self.set_status(name, false, "prepared, not attached yet".into());
                    self.prepared_exit_sources.push(*probe);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "KVM exit probe {name} skipped: it did not load");
                    self.set_status(name, false, e.to_string());
                }
            }
        }
        for probe in SOURCES.iter().filter(|p| !candidates.contains(&p.program)) {
            let why = format!("not selected (kvm_exit_source = {wanted:?})");
            self.set_status(probe.program, false, why);
        }
    }

    /// Attaches the first prepared source that attaches; the rest are unloaded.
    pub(super) fn attach_exit_source(&mut self) {
        for probe in std::mem::take(&mut self.prepared_exit_sources) {
            let name = probe.program;
            if let Some(in_use) = self.exit_source {
                probe.unload(&mut self.ebpf);
                self.set_status(name, false, format!("{in_use} is in use"));
                continue;
            }
            match probe.attach(&mut self.ebpf) {
                Ok(()) => {
                    // Tests and operators grep for this line: keep its wording.
                    tracing::info!(source = name, "KVM exit probe attached to kvm:{name}");
                    self.exit_source = Some(name);
                    self.set_status(name, true, probe.attach_point());
                }
                Err(e) => {
                    tracing::warn!(error = %e, "KVM exit probe {name} skipped");
                    probe.unload(&mut self.ebpf);
                    self.set_status(name, false, e.to_string());
                }
            }
        }
        if self.exit_source.is_none() && self.options.kvm_exit_source != KvmExitSource::Off {
            tracing::warn!("no KVM exit source attached: exit counts will be missing");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_kvm_exit_only_under_hardware_kvm() {
        let auto = KvmExitSource::Auto;
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_intel"))[0],
            programs::KVM_EXIT
        );
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_amd"))[0],
            programs::KVM_EXIT
        );
        assert_eq!(
            exit_source_candidates(auto, Some("kvm_pvm")),
            &[programs::KVM_USERSPACE_EXIT]
        );
        assert_eq!(
            exit_source_candidates(auto, None),
            &[programs::KVM_USERSPACE_EXIT]
        );
        let forced = exit_source_candidates(KvmExitSource::KvmExit, Some("kvm_pvm"));
        assert_eq!(forced, &[programs::KVM_EXIT]);
        assert!(exit_source_candidates(KvmExitSource::Off, Some("kvm_intel")).is_empty());
    }

    #[test]
    fn every_candidate_is_a_known_source() {
        let kinds = [
            KvmExitSource::Auto,
            KvmExitSource::KvmExit,
            KvmExitSource::KvmUserspaceExit,
        ];
        for wanted in kinds {
            for vendor in [Some("kvm_intel"), Some("kvm_pvm"), None] {
                for name in exit_source_candidates(wanted, vendor) {
                    assert!(SOURCES.iter().any(|p| p.program == *name), "{name}");
                }
            }
        }
    }

    #[test]
    fn kvm_exit_is_classic_and_kvm_userspace_exit_raw() {
        let points: Vec<String> = SOURCES.iter().map(Probe::attach_point).collect();
        assert_eq!(
            points,
            ["tracepoint/kvm/kvm_exit", "raw_tp/kvm_userspace_exit"]
        );
    }
}
