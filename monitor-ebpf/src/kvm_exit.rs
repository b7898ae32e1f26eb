//! KVM exits of tracked vCPU threads, per reason; the per-CPU slots give the split by CPU.
//!
//! Two sources, one map: `kvm:kvm_exit` (every hardware exit, bare-metal VMX/SVM) and
//! `kvm:kvm_userspace_exit` (exits that reach the VMM; the only one that fires under nested
//! KVM). Both are classic tracepoints: they live in the kvm module on most hosts, where the
//! record layout is read from tracefs at load time rather than from vmlinux BTF. The daemon
//! attaches one of the two (its choice is in `monitor/src/probes/kvm_exit.rs`).

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, maps::PerCpuHashMap,
    programs::TracePointContext, EbpfContext,
};
use aya_log_ebpf::warn;
use monitor_common::kvm_exit::{ExitKey, EXIT_REASON_SVM_FLAG};
use monitor_common::tracked::MapError;

use crate::tracked::{count_map_error, tracked_slot, PASS_TO_PERF};

/// Exits per (thread, reason), size set at load time.
#[map(name = "KVM_EXITS")]
static KVM_EXITS: PerCpuHashMap<ExitKey, u64> = PerCpuHashMap::with_max_entries(1, 0);

/// Offsets of the fields in the tracepoint records, from tracefs `format` files (set at load
/// time; these defaults are the layout of current kernels).
#[no_mangle]
static KVM_EXIT_REASON_OFFSET: u32 = 8;
#[no_mangle]
static KVM_EXIT_ISA_OFFSET: u32 = 24;
#[no_mangle]
static KVM_USERSPACE_EXIT_REASON_OFFSET: u32 = 8;

/// kvm:kvm_exit (isa 1 = VMX, 2 = SVM).
const ISA_SVM: u32 = 2;

// Written out instead of #[tracepoint]: aya-ebpf 0.1's macro always returns 0, which
// makes the kernel drop the event for every perf user of the tracepoint.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn kvm_exit(raw: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(raw);
    // In a kvm tracepoint, current is the vCPU thread.
    let tid = bpf_get_current_pid_tgid() as u32;
    if tracked_slot(tid) == 0 {
        return PASS_TO_PERF;
    }
    // SAFETY: offsets come from this kernel's tracefs format of kvm:kvm_exit.
    let (reason, isa) = unsafe {
        let reason_at = core::ptr::read_volatile(&KVM_EXIT_REASON_OFFSET) as usize;
        let isa_at = core::ptr::read_volatile(&KVM_EXIT_ISA_OFFSET) as usize;
        (
            ctx.read_at::<u32>(reason_at).unwrap_or(u32::MAX),
            ctx.read_at::<u32>(isa_at).unwrap_or(0),
        )
    };
    let reason = if isa == ISA_SVM {
        reason | EXIT_REASON_SVM_FLAG
    } else {
        // VMX: the basic reason is the low 16 bits; the rest are flags such as FAILED_VMENTRY.
        reason & 0xffff
    };
    count_exit(&ctx, tid, reason);
    PASS_TO_PERF
}

// Written out instead of #[tracepoint]: aya-ebpf 0.1's macro always returns 0, which
// makes the kernel drop the event for every perf user of the tracepoint.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn kvm_userspace_exit(raw: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(raw);
    // Current is the vCPU thread returning to its VMM.
    let tid = bpf_get_current_pid_tgid() as u32;
    if tracked_slot(tid) == 0 {
        return PASS_TO_PERF;
    }
    // SAFETY: offset from this kernel's tracefs format of kvm:kvm_userspace_exit.
    let reason = unsafe {
        let at = core::ptr::read_volatile(&KVM_USERSPACE_EXIT_REASON_OFFSET) as usize;
        ctx.read_at::<u32>(at).unwrap_or(u32::MAX)
    };
    count_exit(&ctx, tid, reason);
    PASS_TO_PERF
}

#[inline(always)]
fn count_exit<C: EbpfContext>(ctx: &C, tid: u32, reason: u32) {
    let key = ExitKey { tid, reason };
    match KVM_EXITS.get_ptr_mut(&key) {
        // SAFETY: this CPU's slot, only written from this CPU.
        Some(count) => unsafe { *count += 1 },
        None => {
            if KVM_EXITS.insert(&key, &1, 0).is_err() {
                // Rare (the map is full): worth a line in the daemon's log.
                warn!(
                    ctx,
                    "KVM_EXITS full: exit of tid {} reason {} not counted", tid, reason
                );
                count_map_error(MapError::KvmExits);
            }
        }
    }
}
