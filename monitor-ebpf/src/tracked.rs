//! Which threads are tracked vCPU threads, and the maps every probe shares.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use monitor_common::tracked::{slot_shift, slot_word, MapError, MAP_ERROR_SLOTS, SLOT_MASK};

/// What a classic tracepoint program returns: 1 lets the kernel still hand the event to other
/// perf users of the tracepoint (an operator's `perf stat`, say); 0 would silently swallow it.
pub const PASS_TO_PERF: u32 = 1;

/// A 16-bit slot per thread id, four to a word (max_entries is set at load time from the
/// kernel's pid_max): 0 for threads that are not tracked vCPUs, else the thread's index in the
/// per-CPU run array. One inlined array access answers both "tracked?" and "where?".
#[map(name = "TRACKED_TIDS")]
pub static TRACKED_TIDS: Array<u64> = Array::with_max_entries(1, 0);

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
