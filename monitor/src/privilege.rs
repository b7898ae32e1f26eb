//! Least privilege once the probes are attached: every capability the steady state does not
//! need leaves the effective, permitted, inheritable, ambient and bounding sets of every
//! thread of the process.
//!
//! What the steady state does, and why it needs no capability (kernel >= 5.19):
//! - reads and updates the probes' maps, reads program run times (BPF_OBJ_GET_INFO_BY_FD) and
//!   the log buffer through file descriptors it already holds: the kernel checks
//!   capabilities when a map is created or a program loaded, not on use of the fd;
//! - reads /proc/PID/task/TID/{comm,stat,status}, /proc/TID/schedstat and sched_getaffinity
//!   of the QEMU threads: world-readable, whoever owns QEMU (measured with a process of
//!   another uid and no capabilities at all);
//! - talks to libvirtd over its unix socket (file permission, and libvirtd's own check of the
//!   peer's uid), which also applies the pins in enforce mode; notifies systemd; serves HTTP
//!   on a port bound before the probes were loaded.
//!
//! One exception by configuration: in enforce mode with `[qmp] sockets` configured, the
//! policy pins QEMU processes without libvirt itself (sched_setaffinity of their threads),
//! which for a QEMU of another uid needs CAP_SYS_NICE: that one is kept then, with that reason
//! in the log line (decided at start: a reload into enforce mode does not bring it back, and a
//! pin refused for it says so).
//!
//! Before 5.19, with `kernel.unprivileged_bpf_disabled` set (every distribution's default),
//! `bpf()` refused every command, map lookups on held fds included, to a caller without
//! CAP_BPF (CAP_SYS_ADMIN before 5.8); commit c8644cd0efe7 ("bpf: refine
//! kernel.unprivileged_bpf_disabled behaviour") limited that to map creation and program
//! load. There the one capability is kept, with that reason in the log line.
//!
//! Capabilities belong to a thread, not to the process, and a thread can change only its
//! own (capset(2) refuses another tid). So the drop is applied on the calling thread, then
//! each other thread is sent a signal whose handler applies the same drop to itself: what
//! glibc does for setuid(2) across threads and libcap's psx library for capabilities. Threads
//! started afterwards inherit the reduced sets of the thread that starts them. The result
//! is read back from /proc/self/task/*/status, the kernel's own view, until every thread
//! holds no more than the kept set.

use std::collections::BTreeSet;

use caps::Capability;

use per_thread::drop_all_but;
use status::threads;
pub use status::ThreadCaps;

mod per_thread;
mod status;

/// Why the drop could not be completed.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// The handler that lets each thread drop its own capabilities cannot be installed.
    #[error("cannot install the signal handler for the per-thread drop: {0}")]
    Handler(std::io::Error),
    /// /proc/self/task cannot be listed or a thread's status read.
    #[error("cannot read {path}: {source}")]
    Proc {
        /// The file or directory.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Threads still hold more than the kept set after every attempt.
    #[error("threads {tids:?} still hold capabilities beyond the kept set")]
    Kept {
        /// The thread ids.
        tids: Vec<u32>,
    },
}

/// A capability the steady state keeps, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The capability.
    pub cap: Capability,
    /// Why the running daemon needs it.
    pub why: &'static str,
}

/// What the steady state needs on a kernel of `release` (uname -r) with
/// `kernel.unprivileged_bpf_disabled` = `bpf_disabled` (None: unreadable, taken as set).
pub fn needed_in_steady_state(release: &str, bpf_disabled: Option<u32>) -> Vec<Kept> {
    let version = kernel_version(release);
    let gated = bpf_disabled != Some(0);
    match version {
        Some(v) if v >= (5, 19) || !gated => Vec::new(),
        Some(v) if v >= (5, 8) => vec![Kept {
            cap: Capability::CAP_BPF,
            why: "kernels before 5.19 refuse bpf() on held map fds without it \
                  (kernel.unprivileged_bpf_disabled is set)",
        }],
        // No CAP_BPF before 5.8 (and an unreadable release is taken as old): bpf() is
        // CAP_SYS_ADMIN's there.
        _ => vec![Kept {
            cap: Capability::CAP_SYS_ADMIN,
            why: "kernels before 5.8 have no CAP_BPF and refuse bpf() on held map fds \
                  without CAP_SYS_ADMIN (kernel.unprivileged_bpf_disabled is set)",
        }],
    }
}

/// CAP_SYS_NICE, kept when enforce mode pins QEMU processes without libvirt.
pub const SYS_NICE_FOR_PROCESS_PINS: Kept = Kept {
    cap: Capability::CAP_SYS_NICE,
    why: "policy.mode is enforce and [qmp] sockets are configured: sched_setaffinity of \
          the threads of a QEMU without libvirt run by another user",
};

/// CAP_SYS_PTRACE, kept when the numa_maps fallback is on: /proc/PID/numa_maps needs ptrace
/// read access to the QEMU process, which a process without capabilities lacks even under
/// the same uid when QEMU holds capabilities the daemon does not.
pub const SYS_PTRACE_FOR_NUMA_MAPS: Kept = Kept {
    cap: Capability::CAP_SYS_PTRACE,
    why: "numa_maps_fallback_seconds is not 0: reading /proc/PID/numa_maps of a QEMU whose \
          memory cgroup cannot be read needs ptrace read access",
};

/// Kept when enforce mode moves VM memory (`policy.memory = "enforce"`): migrate_pages(2)
/// of a QEMU of another uid needs CAP_SYS_PTRACE (its ptrace_may_access check), and a target
/// node outside the QEMU's cpuset.mems CAP_SYS_NICE.
pub const FOR_MEMORY_MOVES: [Kept; 2] = [
    Kept {
        cap: Capability::CAP_SYS_PTRACE,
        why: "policy.mode and policy.memory are enforce: migrate_pages of a QEMU run by \
              another user",
    },
    Kept {
        cap: Capability::CAP_SYS_NICE,
        why: "policy.mode and policy.memory are enforce: migrate_pages to a node outside \
              the QEMU's cpuset.mems",
    },
];

/// `(major, minor)` of a kernel release such as "6.18.44-fc-v1045".
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Drops every capability the steady state does not need from every thread, and logs one
/// line with what was kept (and why) and what was dropped. Call it once the probes are
/// attached and their maps open. `by_config`: what the configuration needs beyond the
/// probes ([`SYS_NICE_FOR_PROCESS_PINS`], [`SYS_PTRACE_FOR_NUMA_MAPS`],
/// [`FOR_MEMORY_MOVES`]; a capability named twice is kept once). A failure is logged, not
/// fatal: the daemon still works, with more privilege than it needs, and says so.
pub fn drop_after_attach(by_config: &[Kept]) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let bpf_disabled = std::fs::read_to_string("/proc/sys/kernel/unprivileged_bpf_disabled")
        .ok()
        .and_then(|t| t.trim().parse().ok());
    let mut kept = needed_in_steady_state(release.trim(), bpf_disabled);
    for k in by_config {
        if !kept.iter().any(|have| have.cap == k.cap) {
            kept.push(k.clone());
        }
    }
    let before = held_by_process().unwrap_or_default();
    match drop_all_but(&kept) {
        Ok(bounding_kept) => {
            let after = held_by_process().unwrap_or_default();
            let dropped: Vec<String> = before.difference(&after).map(name).collect();
            let kept: Vec<String> = kept
                .iter()
                .filter(|k| after.contains(&k.cap.index()))
                .map(|k| format!("{} ({})", k.cap, k.why))
                .collect();
            tracing::info!(
                kept = %if kept.is_empty() { "none".to_string() } else { kept.join(", ") },
                dropped = %if dropped.is_empty() { "none".to_string() } else { dropped.join(" ") },
                bounding_set_kept = %bounding_kept,
                "capabilities dropped on every thread: the probes are attached"
            );
        }
        Err(e) => tracing::error!(
            error = %e,
            "capabilities NOT dropped: the daemon keeps more privilege than it needs"
        ),
    }
}

/// Every capability index any thread of the process holds (permitted, effective or ambient;
/// the bounding set is reported on its own).
fn held_by_process() -> Result<BTreeSet<u8>, PrivilegeError> {
    let mut held = BTreeSet::new();
    for tid in threads()? {
        if let Some(sets) = ThreadCaps::read(tid)? {
            let any = sets.effective | sets.permitted | sets.ambient;
            held.extend((0..64u8).filter(|i| any & (1 << i) != 0));
        }
    }
    Ok(held)
}

/// "CAP_BPF" for index 39; the number for one this crate does not know.
fn name(index: &u8) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() == *index)
        .map_or(format!("cap{index}"), |c| c.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_state_needs_nothing_from_5_19_and_the_bpf_capability_before() {
        assert_eq!(needed_in_steady_state("6.18.44-fc-v1045", Some(2)), vec![]);
        assert_eq!(needed_in_steady_state("5.19.0", Some(1)), vec![]);
        let old = needed_in_steady_state("5.15.0-91-generic", Some(2));
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].cap, Capability::CAP_BPF);
        assert!(old[0].why.contains("5.19"), "{}", old[0].why);
        // Unprivileged bpf() allowed: the held fds need nothing even there.
        assert_eq!(needed_in_steady_state("5.15.0", Some(0)), vec![]);
        assert_eq!(
            needed_in_steady_state("5.4.0", None)[0].cap,
            Capability::CAP_SYS_ADMIN
        );
        assert_eq!(
            needed_in_steady_state("garbage", Some(2))[0].cap,
            Capability::CAP_SYS_ADMIN
        );
    }
}
