//! The one bar every run-time agreement test holds pinsight to: over an interval fenced by a
//! paused (or stopped) vCPU thread at both ends, pinsight's run time equals the kernel's
//! schedstat. Both are the scheduler's own `se.sum_exec_runtime`: the probes read it at every
//! switch and count its growth, so the totals agree by construction, also when a switch never
//! reaches the tracepoint (see monitor-common's sched_switch module). What is left is float
//! rounding of the exposition, far below a microsecond.

/// The largest difference allowed, in seconds.
pub const AGREEMENT_SLACK_SECONDS: f64 = 1e-5;

/// Fails unless `ours` (pinsight, seconds) equals `kernel` (schedstat, seconds) within
/// [`AGREEMENT_SLACK_SECONDS`]; `what` names the interval in the message.
pub fn assert_agrees_with_schedstat(what: &str, ours: f64, kernel: f64) {
    assert!(
        (ours - kernel).abs() <= AGREEMENT_SLACK_SECONDS,
        "{what}: pinsight counted {ours:.6} s, schedstat {kernel:.6} s (a difference of {:.6} s; \
         at most {AGREEMENT_SLACK_SECONDS} s is allowed)",
        ours - kernel
    );
}
