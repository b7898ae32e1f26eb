//! pinsight's kernel side: tiny probes that attribute vCPU run time to CPUs and count KVM exits.
//!
//! One file per probe (`<category>_<event>.rs`, named like its program). Every program starts
//! with the same filter: is this thread a tracked vCPU thread? The answer is its 16-bit slot in
//! the tracked-thread table (`tracked.rs`): one inlined array access, no hash lookup, so the
//! programs cost almost nothing for the many threads on a host that are not vCPUs. A non-zero
//! slot is also the index of the thread's counters in the per-CPU arrays. sched_switch, which
//! runs most often, asks a cheaper question first: is either task at a cgroup depth where
//! tracked threads are (`se.depth`, on a line the scheduler has just used)?
#![no_std]
#![no_main]

mod bench;
mod cgroup_attach_task;
mod kvm_exit;
mod sched_migrate_task;
mod sched_process_exit;
mod sched_switch;
mod task;
mod tracked;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic; nothing calls this.
    unsafe { core::hint::unreachable_unchecked() }
}
