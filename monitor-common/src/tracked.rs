//! What every probe shares: the table of tracked threads and the probes' own error counters.
//!
//! The tracked-thread table is an `Array<u64>` of 16-bit slots, four per word, one slot per
//! possible thread id (so `pid_max / 4` words). A slot holds 0 for a thread that is not a
//! tracked vCPU thread, else the thread's index into the per-CPU arrays of the probes (such
//! as [`crate::sched_switch::RUN_NS`]). One inlined array access answers both "tracked?" and
//! "where are its counters?", without a hash lookup on every context switch.

/// `Array<u64>`: the slot table described above; written only by the daemon (and cleared by
/// sched_process_exit when a tracked thread exits).
pub const TRACKED_TIDS: &str = "TRACKED_TIDS";
/// `PerCpuArray<u64>` indexed by [`MapError`]: failed map updates in the probes.
pub const MAP_ERRORS: &str = "MAP_ERRORS";

/// Thread-id slots per word of [`TRACKED_TIDS`].
pub const SLOTS_PER_WORD: u32 = 4;
/// Width of one slot: slot numbers (and so `probes.max_threads`) stay below 2^16.
pub const SLOT_BITS: u32 = 16;
/// The bits of one slot, before shifting it into place.
pub const SLOT_MASK: u64 = (1 << SLOT_BITS) - 1;

/// Index of the [`TRACKED_TIDS`] word that holds `tid`'s slot.
#[inline(always)]
pub const fn slot_word(tid: u32) -> u32 {
    tid / SLOTS_PER_WORD
}

/// Bit position of `tid`'s slot inside its word.
#[inline(always)]
pub const fn slot_shift(tid: u32) -> u32 {
    (tid % SLOTS_PER_WORD) * SLOT_BITS
}

/// Words of [`TRACKED_TIDS`] needed for every thread id below `pid_max`.
pub const fn slot_words(pid_max: u32) -> u32 {
    pid_max.div_ceil(SLOTS_PER_WORD)
}

/// Indexes of [`MAP_ERRORS`]: what a probe could not record, and switches it did not see.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapError {
    /// A tracked thread's slot had no KVM_EXITS entry (beyond its size): an exit was not
    /// counted.
    KvmExits = 0,
    /// A tracked thread's slot had no run-time entry (a slot beyond RUN_NS's size).
    MissingThread = 1,
    /// Not a failure: a tracked thread was switched without the sched_switch tracepoint
    /// showing it (seen switched off twice, or on twice). Its run time is still counted.
    UnseenSwitch = 2,
}

/// Number of [`MapError`] slots (the size of [`MAP_ERRORS`]).
pub const MAP_ERROR_SLOTS: u32 = MapError::UnseenSwitch as u32 + 1;
