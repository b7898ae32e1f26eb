//! Applying the drop to every thread of the process: the calling thread drops its own
//! capabilities, every other thread is signalled to drop its own in a handler (raw syscalls
//! and atomics only), and /proc is read back until each holds no more than the kept set.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use caps::Capability;

use super::status::threads;
use super::{name, Kept, PrivilegeError, ThreadCaps};

/// The kept mask, and what the bounding set may keep (the same, or everything it holds when
/// the process may not drop from it, i.e. lacks CAP_SETPCAP): read by the signal handler.
static KEEP: AtomicU64 = AtomicU64::new(0);
static KEEP_BOUNDING: AtomicU64 = AtomicU64::new(u64::MAX);
static HANDLER_INSTALLED: AtomicBool = AtomicBool::new(false);

/// Applies the drop on every thread; returns "none" or the names the bounding set had to
/// keep (no CAP_SETPCAP to drop them with).
pub(super) fn drop_all_but(kept: &[Kept]) -> Result<String, PrivilegeError> {
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
