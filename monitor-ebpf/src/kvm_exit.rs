//! KVM exits of tracked vCPU threads, per reason; the per-CPU values give the split by CPU.
//!
//! Two sources, one map: `kvm:kvm_exit` (every hardware exit, bare-metal VMX/SVM) and
//! `kvm:kvm_userspace_exit` (exits that reach the VMM; the only one that fires under nested
//! KVM). They live in the kvm module on most hosts, outside vmlinux BTF. kvm_exit is a classic
//! tracepoint, whose record layout is read from tracefs at load time: its reason is worked out
//! by the kernel as it fills the record (a vendor-module call no program can make).
//! kvm_userspace_exit's reason is an argument, so it is a raw tracepoint and the kernel
//! builds no record for it. The daemon attaches one of the two (its choice is in
//! `monitor/src/probes/kvm_exit.rs`).
//!
//! The hot path, run for every exit of every thread on the host: the thread's slot (one
//! inlined array access; untracked threads stop there), the reason's index (one load from a
//! compile-time table), the thread's per-CPU counters (one array lookup) and an increment.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::map, maps::PerCpuArray, programs::TracePointContext,
    EbpfContext,
};
use monitor_common::kvm_exit::{
    table_key, ExitCounts, Family, OTHER_INDEX, SVM_INDEX, USERSPACE_INDEX, VMX_INDEX,
};
use monitor_common::tracked::MapError;

use crate::tracked::{count_map_error, tracked_slot, PASS_TO_PERF};

/// Exits per tracked thread (indexed by its slot) and reason index, per CPU; size set at load
/// time (as RUN_NS).
#[map(name = "KVM_EXITS")]
static KVM_EXITS: PerCpuArray<ExitCounts> = PerCpuArray::with_max_entries(1, 0);

/// Offsets of the fields in kvm:kvm_exit's record, from its tracefs `format` file (set at
/// load time; these defaults are the layout of current kernels).
#[no_mangle]
static KVM_EXIT_REASON_OFFSET: u32 = 8;
#[no_mangle]
static KVM_EXIT_ISA_OFFSET: u32 = 24;

/// kvm:kvm_exit (isa 1 = VMX, 2 = SVM).
const ISA_SVM: u32 = 2;

// Written out instead of #[tracepoint]: aya-ebpf 0.1's macro always returns 0, which
// makes the kernel drop the event for every perf user of the tracepoint.
#[no_mangle]
#[link_section = "tracepoint"]
pub fn kvm_exit(raw: *mut core::ffi::c_void) -> u32 {
    let ctx = TracePointContext::new(raw);
    // In a kvm tracepoint, current is the vCPU thread. (Its tid through the helper: reading
    // it from bpf_get_current_task_btf() touches one more cache line and measured no
    // cheaper, see BENCHMARKS.md.)
    let slot = tracked_slot(bpf_get_current_pid_tgid() as u32);
    if slot == 0 {
        return PASS_TO_PERF;
    }
    let reason = read_u32(&ctx, &KVM_EXIT_REASON_OFFSET);
    let index = if read_u32(&ctx, &KVM_EXIT_ISA_OFFSET) == ISA_SVM {
        reason_index(Family::Svm, reason, &SVM_INDEX)
    } else {
        // VMX: the basic reason is the low 16 bits; the rest are flags such as FAILED_VMENTRY.
        reason_index(Family::Vmx, reason & 0xffff, &VMX_INDEX)
    };
    count_exit(slot, index);
    PASS_TO_PERF
}

/// `kvm_userspace_exit(reason, errno)`, a raw tracepoint: the kernel hands the program the
/// tracepoint's arguments (one u64 each) and builds no record, which a classic tracepoint
/// does for every event before any program runs (BENCHMARKS.md, "Classic or raw tracepoints").
/// The order of the arguments is the tracepoint's prototype (include/trace/events/kvm.h),
/// unchanged since the tracepoint was added; a reason outside the table counts as `other`.
/// Current is the vCPU thread returning to its VMM.
#[no_mangle]
#[link_section = "raw_tp"]
pub fn kvm_userspace_exit(args: *mut core::ffi::c_void) -> u32 {
    let slot = tracked_slot(bpf_get_current_pid_tgid() as u32);
    if slot == 0 {
        return 0;
    }
    // SAFETY: a raw tracepoint's context is its arguments, one u64 each; the verifier checks
    // the load.
    let reason = unsafe { *(args as *const u64) } as u32;
    count_exit(
        slot,
        reason_index(Family::Userspace, reason, &USERSPACE_INDEX),
    );
    0
}

/// The u32 field at the offset in `offset` (a load-time global) of the tracepoint record;
/// u32::MAX (an `other` reason) if it cannot be read.
///
/// The verifier lets a classic tracepoint program load from its record directly only at a
/// constant offset (a register-moved context pointer is refused), so the usual offsets get a
/// direct load each. The global is read-only data, a constant to the verifier, which drops
/// the branches not taken: on a kernel of the usual layout this is one load, no helper call.
#[inline(always)]
fn read_u32(ctx: &TracePointContext, offset: &u32) -> u32 {
    // SAFETY: the global is a plain u32 in read-only data.
    let at = unsafe { core::ptr::read_volatile(offset) };
    match at {
        8 => record_u32::<8>(ctx),
        24 => record_u32::<24>(ctx),
        // SAFETY: the offset comes from this kernel's tracefs format of the tracepoint, and
        // read_at goes through bpf_probe_read, which fails cleanly on a bad address.
        _ => unsafe { ctx.read_at::<u32>(at as usize).unwrap_or(u32::MAX) },
    }
}

/// The u32 at byte `AT` of the tracepoint record, by a direct load.
#[inline(always)]
fn record_u32<const AT: usize>(ctx: &TracePointContext) -> u32 {
    // SAFETY: the record is at least AT + 4 bytes long (its tracefs format says so, or the
    // daemon would have set another offset), and the verifier checks the access.
    unsafe { *(ctx.as_ptr() as *const u8).add(AT).cast::<u32>() }
}

/// The reason index of `code` from its family's compile-time table.
#[inline(always)]
fn reason_index(family: Family, code: u32, table: &[u8]) -> usize {
    match table_key(family, code).and_then(|key| table.get(key)) {
        Some(index) => *index as usize,
        None => OTHER_INDEX,
    }
}

/// One more exit of reason `index` for the thread in `slot`, on this CPU.
#[inline(always)]
fn count_exit(slot: u32, index: usize) {
    let Some(counts) = KVM_EXITS.get_ptr_mut(slot) else {
        // A slot beyond the map: a tracked thread that is not a vCPU (emulator, IOThread),
        // which KVM never runs a guest in, so never.
        count_map_error(MapError::KvmExits);
        return;
    };
    // SAFETY: this CPU's value from a successful lookup, only written from this CPU.
    if let Some(count) = unsafe { (*counts).by_reason.get_mut(index) } {
        *count += 1;
    }
}
