//! Which threads are tracked vCPU threads, and the maps every probe shares.

use aya_ebpf::{
    macros::map,
    maps::{Array, PerCpuArray},
};
use monitor_common::MAP_ERROR_SLOTS;

/// What a classic tracepoint program returns: 1 lets the kernel still hand the event to other
/// perf users of the tracepoint (an operator's `perf stat`, say); 0 would silently swallow it.
pub const PASS_TO_PERF: u32 = 1;

/// A 16-bit slot per thread id, four to a word (max_entries is set at load time from the
/// kernel's pid_max): 0 for threads that are not tracked vCPUs, else the thread's index in the
/// per-CPU run array. One inlined array access answers both "tracked?" and "where?".
#[map(name = "TRACKED_TIDS")]
pub static TRACKED_TIDS: Array<u64> = Array::with_max_entries(1, 0);

/// Socket of every possible CPU, from the daemon's topology (size set at load time).
#[map(name = "CPU_SOCKET")]
pub static CPU_SOCKET: Array<u32> = Array::with_max_entries(1, 0);

/// Failed map updates, by `monitor_common::MapError`.
#[map(name = "MAP_ERRORS")]
pub static MAP_ERRORS: PerCpuArray<u64> = PerCpuArray::with_max_entries(MAP_ERROR_SLOTS, 0);

/// Byte offset of `pid` in `struct task_struct`; set by the daemon from the kernel's BTF.
/// Being read-only data, the verifier sees it as a constant, so `task + TASK_PID_OFFSET` is a
/// checked direct field load, not a probe_read helper call.
#[no_mangle]
pub static TASK_PID_OFFSET: u32 = 0;

/// Byte offset of `se.sum_exec_runtime` in `struct task_struct`, from the kernel's BTF.
#[no_mangle]
pub static TASK_RUNTIME_OFFSET: u32 = 0;

/// Reads `task->se.sum_exec_runtime`: the scheduler updates it before sched_switch fires, so
/// for prev it includes the stint that is ending. Using the kernel's own clock saves a
/// bpf_ktime_get_ns() call per switch (the larger part of the cost under virtualisation) and
/// agrees with /proc/TID/schedstat by construction.
#[inline(always)]
pub fn task_runtime(task: *const u8) -> u64 {
    // SAFETY: as for task_tid; the offset is that of a u64 member of a nested struct.
    unsafe {
        let offset = core::ptr::read_volatile(&TASK_RUNTIME_OFFSET) as usize;
        *(task.add(offset) as *const u64)
    }
}

/// Reads `task->pid` (the thread id) from a BTF task pointer.
#[inline(always)]
pub fn task_tid(task: *const u8) -> u32 {
    // SAFETY: `task` is a trusted BTF pointer to a task_struct handed to us by the tracepoint,
    // and the offset is the real offset of its `pid` member (the verifier checks both).
    unsafe {
        let offset = core::ptr::read_volatile(&TASK_PID_OFFSET) as usize;
        *(task.add(offset) as *const u32)
    }
}

/// The run-array slot of `tid`, 0 when it is not a tracked vCPU thread.
#[inline(always)]
pub fn tracked_slot(tid: u32) -> u32 {
    match TRACKED_TIDS.get(tid >> 2) {
        Some(word) => ((*word >> ((tid & 3) * 16)) & 0xffff) as u32,
        None => 0,
    }
}

/// Stops tracking `tid` (its thread exited): later threads that reuse the id are not vCPUs.
/// Not atomic: a racing update can at worst leave the slot set until the daemon's next rescan,
/// which removes every thread that no longer exists.
#[inline(always)]
pub fn untrack(tid: u32) {
    if let Some(word) = TRACKED_TIDS.get_ptr_mut(tid >> 2) {
        // SAFETY: the pointer comes from a successful array lookup.
        unsafe { *word &= !(0xffffu64 << ((tid & 3) * 16)) };
    }
}

/// Counts a failed map update so the daemon can export it.
#[inline(always)]
pub fn count_map_error(slot: monitor_common::MapError) {
    if let Some(counter) = MAP_ERRORS.get_ptr_mut(slot as u32) {
        // SAFETY: per-CPU slot from a successful lookup; only this CPU writes it.
        unsafe { *counter += 1 };
    }
}
