//! A dying thread is a dying process: a long-lived thread whose work panics ends the process
//! with a non-zero code and a log line naming the thread, instead of leaving a daemon that
//! looks alive but no longer does that work (systemd restarts a process that exits).

use std::panic::{catch_unwind, AssertUnwindSafe};

/// The exit code of a process whose long-lived thread died (EX_SOFTWARE).
pub const EXIT_THREAD_DIED: i32 = 70;

/// Runs `work`; if it panics, logs "`what` panicked (message): exiting" and exits the process.
pub fn exit_on_panic<R>(what: &str, work: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(work)) {
        Ok(r) => r,
        Err(panic) => {
            tracing::error!("{what} panicked ({}): exiting", panic_message(&*panic));
            std::process::exit(EXIT_THREAD_DIED);
        }
    }
}

/// The text a panic carried, if it was a string.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}
