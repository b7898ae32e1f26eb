//! Where each probe's program hooks into the kernel, and the two stages every program goes
//! through: *prepare* (load it, so the verifier checks it) and *attach*.

use aya::programs::{BtfTracePoint, RawTracePoint, TracePoint};
use aya::{Btf, Ebpf};

use super::error::{prog_err, ProbeError};
use super::tracefs::{self, TracefsError};

/// The kind of attach point.
#[derive(Debug, Clone, Copy)]
pub(super) enum Hook {
    /// A BTF-typed tracepoint (tp_btf) on this kernel tracepoint: typed arguments, no record.
    BtfTracepoint(&'static str),
    /// A classic tracepoint `category:event`, whose record layout tracefs describes.
    Tracepoint {
        /// Category, e.g. "kvm".
        category: &'static str,
        /// Event name.
        event: &'static str,
    },
    /// A raw tracepoint on `category:event`: the program gets the tracepoint's arguments,
    /// one u64 each, and the kernel builds no record (cheaper per event than a classic one;
    /// BENCHMARKS.md, "Classic or raw tracepoints").
    RawTracepoint {
        /// Category, e.g. "kvm" (where tracefs lists it).
        category: &'static str,
        /// Event name, which is also the raw tracepoint's name.
        event: &'static str,
    },
}

/// One probe: its program (named like its event), where it hooks in, whether the daemon can
/// run without it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    /// Program name, as bpftool and `pinsight_probe_attached{probe=...}` show it.
    pub program: &'static str,
    /// Its attach point.
    pub hook: Hook,
    /// `None` for a probe the daemon cannot work without; else what is lost when it is skipped.
    pub without_it: Option<&'static str>,
}

impl Probe {
    /// The attach point as the status shows it: `tp_btf/sched_switch`, `tracepoint/kvm/kvm_exit`.
    pub fn attach_point(&self) -> String {
        match self.hook {
            Hook::BtfTracepoint(event) => format!("tp_btf/{event}"),
            Hook::Tracepoint { category, event } => format!("tracepoint/{category}/{event}"),
            Hook::RawTracepoint { event, .. } => format!("raw_tp/{event}"),
        }
    }

    /// Loads the program into the kernel (the verifier checks it); nothing runs yet.
    pub fn prepare(&self, ebpf: &mut Ebpf, btf: &Btf) -> Result<(), ProbeError> {
        let name = self.program;
        let program = ebpf.program_mut(name).ok_or(ProbeError::Missing(name))?;
        match self.hook {
            Hook::BtfTracepoint(event) => {
                let prog: &mut BtfTracePoint = program.try_into().map_err(prog_err(name))?;
                prog.load(event, btf).map_err(prog_err(name))
            }
            Hook::Tracepoint { .. } => {
                let prog: &mut TracePoint = program.try_into().map_err(prog_err(name))?;
                prog.load().map_err(prog_err(name))
            }
            Hook::RawTracepoint { .. } => {
                let prog: &mut RawTracePoint = program.try_into().map_err(prog_err(name))?;
                prog.load().map_err(prog_err(name))
            }
        }
    }

    /// Attaches the prepared program; a missing tracepoint is named with its likely cause
    /// rather than left to the kernel's bare ENOENT. A classic tracepoint needs tracefs (its
    /// id is read there); a raw one does not, so tracefs is asked only to explain a failure.
    pub fn attach(&self, ebpf: &mut Ebpf) -> Result<(), ProbeError> {
        let name = self.program;
        if let Hook::Tracepoint { category, event } = self.hook {
            tracefs::format_path(category, event)?;
        }
        let program = ebpf.program_mut(name).ok_or(ProbeError::Missing(name))?;
        match self.hook {
            Hook::BtfTracepoint(_) => {
                let prog: &mut BtfTracePoint = program.try_into().map_err(prog_err(name))?;
                prog.attach().map_err(prog_err(name))?;
            }
            Hook::Tracepoint { category, event } => {
                let prog: &mut TracePoint = program.try_into().map_err(prog_err(name))?;
                prog.attach(category, event).map_err(prog_err(name))?;
            }
            Hook::RawTracepoint { category, event } => {
                let prog: &mut RawTracePoint = program.try_into().map_err(prog_err(name))?;
                if let Err(e) = prog.attach(event) {
                    // tracefs lists the tracepoint where it exists: its absence (the kvm module
                    // not loaded, say) is the likely cause; otherwise the kernel's error stands.
                    return Err(match tracefs::format_path(category, event) {
                        Err(missing @ TracefsError::Missing { .. }) => missing.into(),
                        _ => prog_err(name)(e),
                    });
                }
            }
        }
        Ok(())
    }

    /// Unloads a prepared program that will not be attached (a KVM exit source not in use),
    /// so `bpftool prog` lists only what runs.
    pub fn unload(&self, ebpf: &mut Ebpf) {
        let Some(program) = ebpf.program_mut(self.program) else {
            return;
        };
        let unloaded = match self.hook {
            Hook::BtfTracepoint(_) => {
                <&mut BtfTracePoint>::try_from(program).and_then(|prog| prog.unload())
            }
            Hook::Tracepoint { .. } => {
                <&mut TracePoint>::try_from(program).and_then(|prog| prog.unload())
            }
            Hook::RawTracepoint { .. } => {
                <&mut RawTracePoint>::try_from(program).and_then(|prog| prog.unload())
            }
        };
        if let Err(e) = unloaded {
            tracing::debug!(program = self.program, "unloading an unused program: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{sched_migrate_task, sched_process_exit, sched_switch};

    #[test]
    fn attach_points_read_like_bpftool_and_the_status_page() {
        assert_eq!(sched_switch::PROBE.attach_point(), "tp_btf/sched_switch");
        assert_eq!(
            sched_process_exit::PROBE.attach_point(),
            "tp_btf/sched_process_exit"
        );
        assert_eq!(
            sched_migrate_task::PROBE.attach_point(),
            "tp_btf/sched_migrate_task"
        );
    }

    #[test]
    fn only_sched_switch_is_required() {
        assert!(sched_switch::PROBE.without_it.is_none());
        assert!(sched_process_exit::PROBE.without_it.is_some());
        assert!(sched_migrate_task::PROBE.without_it.is_some());
    }
}
