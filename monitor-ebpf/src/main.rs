//! pinsight's kernel side: tiny probes that attribute vCPU run time to CPUs and count KVM exits.
//!
//! Every program starts with the same filter: is this thread a tracked vCPU thread? The answer
//! is one bit in an array map (inlined by the verifier, no hash lookup), so the programs cost
//! almost nothing for the many threads on a host that are not vCPUs.
#![no_std]
#![no_main]

mod kvm;
mod sched;
mod tracked;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects programs that could reach a panic; nothing calls this.
    unsafe { core::hint::unreachable_unchecked() }
}
