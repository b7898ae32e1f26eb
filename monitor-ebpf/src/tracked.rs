//! Which threads are tracked vCPU threads, and the maps every probe shares.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use monitor_common::sched_switch::{depth_bit, ALL_DEPTHS};
use monitor_common::tracked::{slot_shift, slot_word, MapError, MAP_ERROR_SLOTS, SLOT_MASK};

/// What a classic tracepoint program returns: 1 lets the kernel still hand the event to other
/// perf users of the tracepoint (an operator's `perf stat`, say); 0 would silently swallow it.
pub const PASS_TO_PERF: u32 = 1;

/// A 16-bit slot per thread id, four to a word (max_entries is set at load time from the
/// kernel's pid_max): 0 for threads that are not tracked vCPUs, else the thread's index in the
/// per-CPU run array. One inlined array access answers both "tracked?" and "where?".
#[map(name = "TRACKED_TIDS")]
pub static TRACKED_TIDS: Array<u64> = Array::with_max_entries(1, 0);

/// The depth filter in front of the table (`monitor_common::sched_switch::TRACKED_DEPTHS`):
/// a section of its own, so userspace sees it as a map of one u64. Open until the daemon
/// closes it.
#[no_mangle]
#[link_section = ".data.tracked_depths"]
static mut TRACKED_DEPTHS: u64 = ALL_DEPTHS;

/// Whether a thread at `depth` may be tracked, by the filter word `depths` (read once per
/// event through [`tracked_depths`]).
#[inline(always)]
pub fn depth_may_be_tracked(depths: u64, depth: u32) -> bool {
    depths & depth_bit(depth) != 0
}

/// The depth filter's word now.
#[inline(always)]
pub fn tracked_depths() -> u64 {
    // SAFETY: a plain u64 in a map value the program always has; races with the daemon's
    // writes are word-sized and any value is valid.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(TRACKED_DEPTHS)) }
}

/// Lets threads at `depth` through the filter. Not atomic: a bit lost to a racing write is
/// put back by the daemon at its next read, from the depth recorded in THREAD_RUN.
#[inline(always)]
pub fn let_depth_through(depth: u32) {
    let word = tracked_depths() | depth_bit(depth);
    // SAFETY: as in tracked_depths.
    unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!(TRACKED_DEPTHS), word) }
}

/// Failed map updates, by `monitor_common::tracked::MapError`.
#[map(name = "MAP_ERRORS")]
pub static MAP_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAP_ERROR_SLOTS, 0);

/// The run-array slot of `tid`, 0 when it is not a tracked vCPU thread.
#[inline(always)]
pub fn tracked_slot(tid: u32) -> u32 {
    match TRACKED_TIDS.get(slot_word(tid)) {
        Some(word) => ((*word >> slot_shift(tid)) & SLOT_MASK) as u32,
        None => 0,
    }
}

/// Stops tracking `tid` (its thread exited): later threads that reuse the id are not vCPUs.
/// Not atomic: a racing update can at worst leave the slot set until the daemon's next rescan,
/// which removes every thread that no longer exists.
#[inline(always)]
pub fn untrack(tid: u32) {
    if let Some(word) = TRACKED_TIDS.get_ptr_mut(slot_word(tid)) {
        // SAFETY: the pointer comes from a successful array lookup.
        unsafe { *word &= !(SLOT_MASK << slot_shift(tid)) };
    }
}

/// Counts a failed map update so the daemon can export it.
#[inline(always)]
pub fn count_map_error(slot: MapError) {
    if let Some(counter) = MAP_ERRORS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot from a successful lookup; only this CPU writes it.
        unsafe { *counter += 1 };
    }
}
