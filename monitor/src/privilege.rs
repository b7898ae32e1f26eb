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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caps::Capability;

use status::threads;
pub use status::ThreadCaps;

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

/// The kept mask, and what the bounding set may keep (the same, or everything it holds when
/// the process may not drop from it, i.e. lacks CAP_SETPCAP): read by the signal handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
static KEEP_BOUNDING: AtomicU64 = AtomicU64::new(u64::MAX);
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Applies the drop on every thread; returns "none" or the names the bounding set had to
/// keep (no CAP_SETPCAP to drop them with).
fn drop_all_but(kept: &[Kept]) -> Result<String, PrivilegeError> {
    let keep = kept.iter().fold(0u64, |mask, k| mask | k.cap.bitmask());
    let me = gettid();
    let mine = ThreadCaps::read(me)?.ok_or_else(|| PrivilegeError::Proc {
        path: format!("/proc/self/task/{me}/status"),
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })?;
    let may_drop_bounding = mine.effective & Capability::CAP_SETPCAP.bitmask() != 0;
    let keep_bounding = if may_drop_bounding {
        keep
    } else {
        mine.bounding
    };
    KEEP.store(keep, Ordering::SeqCst);
    KEEP_BOUNDING.store(keep_bounding, Ordering::SeqCst);
    install_handler()?;
    apply_here();
    let within = |c: &ThreadCaps| {
        (c.effective | c.permitted | c.inheritable) & !keep == 0
            && c.bounding & !keep_bounding == 0
            && c.ambient == 0
    };
    // A thread started by one not yet reached inherits its sets: another round finds it.
    for _ in 0..5 {
        let mut pending = Vec::new();
        for tid in threads()? {
            if ThreadCaps::read(tid)?.is_some_and(|c| !within(&c)) {
                pending.push(tid);
            }
        }
        if pending.is_empty() {
            let extra = keep_bounding & !keep;
            let names: Vec<String> = (0..64u8)
                .filter(|i| extra & (1 << i) != 0)
                .map(|i| name(&i))
                .collect();
            return Ok(if names.is_empty() {
                "none".into()
            } else {
                format!("{} (no CAP_SETPCAP to drop them)", names.join(" "))
            });
        }
        for &tid in &pending {
            // SAFETY: tgkill only sends a signal; a thread that has exited gives ESRCH, which
            // the re-read below treats as done.
            unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, drop_signal()) };
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline {
            let mut done = true;
            for &tid in &pending {
                done &= ThreadCaps::read(tid)?.is_none_or(|c| within(&c));
            }
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let mut tids = Vec::new();
    for tid in threads()? {
        if ThreadCaps::read(tid)?.is_some_and(|c| !within(&c)) {
            tids.push(tid);
        }
    }
    Err(PrivilegeError::Kept { tids })
}

/// The real-time signal that asks a thread to drop its capabilities. glibc keeps the first
/// two for itself (SIGRTMIN() is past them); tokio and libvirt use none of the others.
fn drop_signal() -> libc::c_int {
    libc::SIGRTMIN() + 5
}

/// Installs the handler once. It stays installed: a late signal repeats a drop that is
/// already done, whereas the default action of a real-time signal ends the process.
fn install_handler() -> Result<(), PrivilegeError> {
    if HANDLER_INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // SAFETY: a zeroed sigaction is a valid "no flags, empty mask" value to fill in.
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_drop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // Interrupted reads and writes restart; poll/epoll waits return EINTR, which tokio's
    // driver and libvirt's event loop retry.
    action.sa_flags = libc::SA_RESTART;
    // SAFETY: `action` is initialised, the handler is async-signal-safe (raw syscalls and
    // atomics only), and the old action is not asked for.
    let rc = unsafe { libc::sigaction(drop_signal(), &action, std::ptr::null_mut()) };
    if rc != 0 {
        HANDLER_INSTALLED.store(false, Ordering::SeqCst);
        return Err(PrivilegeError::Handler(std::io::Error::last_os_error()));
    }
    Ok(())
}

extern "C" fn on_drop_signal(_signal: libc::c_int) {
    // SAFETY: __errno_location gives this thread's errno; it is restored so the interrupted
    // code does not see the handler's syscalls' errors.
    let errno = unsafe { *libc::__errno_location() };
    apply_here();
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// capget/capset's header (`_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// One 32-bit word of each set.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Drops, on the calling thread, what KEEP / KEEP_BOUNDING do not keep. Async-signal-safe:
/// raw syscalls and atomics only, no allocation, no lock.
fn apply_here() {
    let keep = KEEP.load(Ordering::SeqCst);
    let keep_bounding = KEEP_BOUNDING.load(Ordering::SeqCst);
    // The bounding set first: PR_CAPBSET_DROP needs CAP_SETPCAP in the effective set.
    for cap in 0..64u64 {
        if keep_bounding & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only; an unknown capability gives EINVAL.
        if unsafe { libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) } == 1 {
            // SAFETY: as above.
            unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        }
    }
    // SAFETY: as above; clearing the ambient set needs no capability.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and two data words are what version 3 of capget reads and writes.
    if unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) } != 0 {
        return;
    }
    for (word, d) in data.iter_mut().enumerate() {
        // Truncation intended: each word holds 32 of the 64 bits.
        let keep = (keep >> (32 * word)) as u32;
        d.effective &= keep;
        d.permitted &= keep;
        d.inheritable = 0;
    }
    header.pid = 0;
    // SAFETY: as for capget; pid 0 is the calling thread, and the new sets are subsets.
    unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
}

/// The calling thread's id.
fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    u32::try_from(tid).unwrap_or(0)
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
