//! The threads of a QEMU process, from /proc: its vCPU threads, and the others by role.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpuset::{CpuSet, CpuSetError};

use super::VcpuThread;

/// A QEMU process or thread whose /proc entries cannot be read; names the path.
#[derive(Debug, thiserror::Error)]
pub enum ThreadsError {
    /// The process's task directory is gone (it exited) or unreadable.
    #[error("QEMU process {pid} is gone or unreadable ({}: {source})", path.display())]
    Process {
        /// The QEMU process id.
        pid: u32,
        /// Its task directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A thread's status file cannot be read.
    #[error("{}: {source}", path.display())]
    StatusRead {
        /// The status file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A thread's status file has no usable `Cpus_allowed_list`.
    #[error("{}: {reason}", path.display())]
    AllowedList {
        /// The status file.
        path: PathBuf,
        /// What is wrong with the line.
        reason: String,
    },
}

/// QEMU names its KVM vCPU threads "CPU <index>/KVM".
fn vcpu_index(comm: &str) -> Option<u32> {
    comm.trim()
        .strip_prefix("CPU ")?
        .strip_suffix("/KVM")?
        .parse()
        .ok()
}

/// What a QEMU thread does, from its name (libvirt starts QEMU with `debug-threads=on`, so
/// they are named).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThreadRole {
    /// A vCPU thread, "CPU N/KVM".
    Vcpu,
    /// The main thread (tid = pid): QEMU's main loop, which runs device emulation, timers
    /// and the BQL-held work not given to an IOThread.
    Emulator,
    /// An IOThread, "IO <id>": libvirt's `<iothreads>` ("IO iothread1"), and QEMU's own
    /// monitor IOThread ("IO mon_iothread").
    Iothread,
    /// Everything else: call_rcu, thread-pool workers, KVM's NX huge page recovery worker.
    Other,
}

impl ThreadRole {
    /// Every role, in label order.
    pub const ALL: [ThreadRole; 4] = [
        ThreadRole::Vcpu,
        ThreadRole::Emulator,
        ThreadRole::Iothread,
        ThreadRole::Other,
    ];

    /// The `role` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ThreadRole::Vcpu => "vcpu",
            ThreadRole::Emulator => "emulator",
            ThreadRole::Iothread => "iothread",
            ThreadRole::Other => "other",
        }
    }

    /// The role of thread `tid` named `comm` in process `pid`.
    pub fn of(pid: u32, tid: u32, comm: &str) -> ThreadRole {
        let comm = comm.trim();
        if vcpu_index(comm).is_some() {
            ThreadRole::Vcpu
        } else if tid == pid {
            ThreadRole::Emulator
        } else if comm.starts_with("IO ") {
            ThreadRole::Iothread
        } else {
            ThreadRole::Other
        }
    }
}

/// A thread of a QEMU process other than a vCPU thread.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostThread {
    /// Host thread id.
    pub tid: u32,
    /// What it does.
    pub role: ThreadRole,
    /// Its name (`comm`).
    pub name: String,
    /// The CPUs it may run on (as of the scan).
    pub allowed_cpus: CpuSet,
    /// When it started (as [`VcpuThread::start_time`]).
    #[serde(skip)]
    pub start_time: u64,
}

/// The threads of process `pid` that are not vCPU threads (neither one of `vcpus`, found by
/// name or through QMP, nor named like one), by tid. Threads that exit while they are read
/// are left out; a process that is gone has none (its vCPU threads' read reports it).
pub fn host_threads(proc_root: &Path, pid: u32, vcpus: &[VcpuThread]) -> Vec<HostThread> {
    let Ok(tasks) = Tasks::of(proc_root, pid) else {
        return Vec::new();
    };
    let mut threads: Vec<HostThread> = tasks
        .filter(|task| !vcpus.iter().any(|v| v.tid == task.tid))
        .filter_map(|task| task.host_thread(proc_root, pid))
        .collect();
    threads.sort_by_key(|t| t.tid);
    threads
}

/// vCPU threads of process `pid`, sorted by vCPU index. A process that exits while we read it
/// is an error naming it; a thread that exits is simply not listed.
pub fn vcpu_threads(proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>, ThreadsError> {
    let mut vcpus: Vec<VcpuThread> = Tasks::of(proc_root, pid)?
        .filter_map(|task| task.vcpu_thread(proc_root))
        .collect();
    vcpus.sort_by_key(|v| v.vcpu);
    Ok(vcpus)
}

/// Both of the above in one pass over /proc/PID/task (each thread's name read once): the
/// vCPU threads by name, sorted by vCPU index, and the others by tid.
pub fn all_threads(
    proc_root: &Path,
    pid: u32,
) -> Result<(Vec<VcpuThread>, Vec<HostThread>), ThreadsError> {
    let (mut vcpus, mut others) = (Vec::new(), Vec::new());
    for task in Tasks::of(proc_root, pid)? {
        // A thread named like a vCPU whose CPUs cannot be read is neither.
        match task.vcpu_thread(proc_root) {
            Some(vcpu) => vcpus.push(vcpu),
            None => others.extend(task.host_thread(proc_root, pid)),
        }
    }
    vcpus.sort_by_key(|v| v.vcpu);
    others.sort_by_key(|t: &HostThread| t.tid);
    Ok((vcpus, others))
}

/// One thread of a task directory, with its name read.
struct Task {
    tid: u32,
    dir: PathBuf,
    comm: String,
}

impl Task {
    /// The CPUs it may run on. On the host's own /proc, sched_getaffinity(2), as the
    /// per-tick refresh of vCPU pins reads them ([`affinity`]): its status file's
    /// `Cpus_allowed_list` less any offline CPUs, without the kernel formatting the ~60 lines
    /// of status (a scan of 100 VMs reads some 1,400 threads). Under another root (a
    /// fixture), its status file.
    fn allowed_cpus(&self, proc_root: &Path) -> Result<CpuSet, ThreadsError> {
        match proc_root == Path::new("/proc") {
            true => affinity(self.tid).map_or_else(|| allowed_cpus(&self.dir), Ok),
            false => allowed_cpus(&self.dir),
        }
    }

    /// As a vCPU thread; None for one not named like one, or whose CPUs cannot be read.
    fn vcpu_thread(&self, proc_root: &Path) -> Option<VcpuThread> {
        Some(VcpuThread {
            vcpu: vcpu_index(&self.comm)?,
            tid: self.tid,
            allowed_cpus: self.allowed_cpus(proc_root).ok()?,
            start_time: start_time(&self.dir).unwrap_or(0),
        })
    }

    /// As a thread other than a vCPU thread; None for one named like a vCPU thread.
    fn host_thread(&self, proc_root: &Path, pid: u32) -> Option<HostThread> {
        let role = ThreadRole::of(pid, self.tid, &self.comm);
        (role != ThreadRole::Vcpu).then(|| HostThread {
            tid: self.tid,
            role,
            name: self.comm.trim().to_string(),
            allowed_cpus: self.allowed_cpus(proc_root).unwrap_or_default(),
            start_time: start_time(&self.dir).unwrap_or(0),
        })
    }
}

/// The threads of a process whose names could be read (one that exits meanwhile is left out).
struct Tasks {
    entries: std::fs::ReadDir,
}

impl Tasks {
    fn of(proc_root: &Path, pid: u32) -> Result<Tasks, ThreadsError> {
        let task_dir = proc_root.join(pid.to_string()).join("task");
        let entries = std::fs::read_dir(&task_dir).map_err(|source| ThreadsError::Process {
            pid,
            path: task_dir.clone(),
            source,
        })?;
        Ok(Tasks { entries })
    }
}

impl Iterator for Tasks {
    type Item = Task;

    fn next(&mut self) -> Option<Task> {
        for entry in self.entries.by_ref().flatten() {
            let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            let dir = entry.path();
            let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
                continue;
            };
            return Some(Task { tid, dir, comm });
        }
        None
    }
}

/// The CPUs thread `tid` may run on now, from sched_getaffinity(2); None when it is gone.
pub fn affinity(tid: u32) -> Option<CpuSet> {
    let pid = libc::pid_t::try_from(tid).ok()?;
    // SAFETY: cpu_set_t is plain bits; zeroed is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size passed.
    let rc =
        unsafe { libc::sched_getaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return None;
    }
    // cpu_set_t is an array of unsigned longs, bit `i` of word `w` being CPU `64 * w + i`.
    const WORDS: usize = std::mem::size_of::<libc::cpu_set_t>() / 8;
    // SAFETY: cpu_set_t is WORDS u64s of plain bits, aligned as u64.
    let words: &[u64; WORDS] = unsafe { &*(&set as *const libc::cpu_set_t).cast() };
    Some(CpuSet::from_mask_words(words))
}

/// A task's start time (field 22 of its `stat`, clock ticks after boot).
pub fn start_time(task_dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(task_dir.join("stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `stat` line. The command name (field 2) is in parentheses and may itself
/// hold spaces and parentheses, so fields are counted after its last ')'.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // rest starts with field 3 (state): field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `Cpus_allowed_list` of a task directory.
pub fn allowed_cpus(task_dir: &Path) -> Result<CpuSet, ThreadsError> {
    let path = task_dir.join("status");
    let status = match std::fs::read_to_string(&path) {
        Ok(status) => status,
        Err(source) => return Err(ThreadsError::StatusRead { path, source }),
    };
    let Some(list) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
    else {
        let reason = "no Cpus_allowed_list line".to_string();
        return Err(ThreadsError::AllowedList { path, reason });
    };
    list.parse()
        .map_err(|e: CpuSetError| ThreadsError::AllowedList {
            path,
            reason: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_qemu_vcpu_thread_names() {
        assert_eq!(vcpu_index("CPU 0/KVM\n"), Some(0));
        assert_eq!(vcpu_index("CPU 12/KVM"), Some(12));
        assert_eq!(vcpu_index("qemu-system-x86"), None);
        assert_eq!(vcpu_index("CPU x/KVM"), None);
    }

    #[test]
    fn names_qemu_thread_roles() {
        assert_eq!(ThreadRole::of(10, 12, "CPU 0/KVM\n"), ThreadRole::Vcpu);
        assert_eq!(
            ThreadRole::of(10, 10, "qemu-system-x86\n"),
            ThreadRole::Emulator
        );
        assert_eq!(ThreadRole::of(10, 11, "IO iothread1"), ThreadRole::Iothread);
        assert_eq!(
            ThreadRole::of(10, 13, "IO mon_iothread"),
            ThreadRole::Iothread
        );
        // call_rcu keeps the process's name; it is not the main thread.
        assert_eq!(ThreadRole::of(10, 14, "qemu-system-x86"), ThreadRole::Other);
        assert_eq!(ThreadRole::of(10, 15, "kvm-nx-lpage-re"), ThreadRole::Other);
        assert_eq!(ThreadRole::of(10, 16, "IOthing"), ThreadRole::Other);
    }

    #[test]
    fn host_threads_of_this_process_include_its_main_thread_and_none_of_a_missing_one() {
        let pid = std::process::id();
        let threads = host_threads(Path::new("/proc"), pid, &[]);
        let main = threads.iter().find(|t| t.tid == pid).expect("main thread");
        assert_eq!(main.role, ThreadRole::Emulator);
        // A thread the caller knows as a vCPU (QMP names it by tid) is not listed again.
        let as_vcpu = VcpuThread {
            vcpu: 0,
            tid: pid,
            allowed_cpus: CpuSet::default(),
            start_time: 0,
        };
        let threads = host_threads(Path::new("/proc"), pid, &[as_vcpu]);
        assert!(threads.iter().all(|t| t.tid != pid));
        assert!(host_threads(Path::new("/proc"), u32::MAX, &[]).is_empty());
    }

    #[test]
    fn start_time_is_field_22_even_when_the_name_has_spaces_and_parentheses() {
        let stat = "4242 (CPU 0/KVM) (x) S 1 4242 4242 0 -1 4194624 100 0 0 0 50 10 0 0 20 0 \
                    3 0 987654 123456 789";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("4242 (short) S 1"), None);
        assert_eq!(parse_start_time("no parenthesis"), None);
        let own = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        assert!(parse_start_time(&own).is_some(), "{own}");
    }

    #[test]
    fn reads_this_process_affinity_and_reports_a_missing_process() {
        let own = allowed_cpus(Path::new("/proc/self")).unwrap();
        assert!(!own.is_empty());
        let err = vcpu_threads(Path::new("/proc"), u32::MAX).unwrap_err();
        assert!(err.to_string().contains(&u32::MAX.to_string()), "{err}");
    }

    #[test]
    fn the_syscall_gives_what_the_status_file_says_for_every_thread() {
        // A thread of ours on CPU 0 only, beside the others (all CPUs): both must agree.
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let pinned = std::thread::spawn(move || {
            // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) applies to this thread.
            unsafe {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(0, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
            }
            tx.send(()).unwrap();
            let _ = stop_rx.recv();
        });
        rx.recv().unwrap();
        let pid = std::process::id();
        let tasks: Vec<Task> = Tasks::of(Path::new("/proc"), pid).unwrap().collect();
        assert!(tasks.len() >= 2);
        let mut seen_pinned = false;
        for task in &tasks {
            let by_syscall = task.allowed_cpus(Path::new("/proc")).unwrap();
            assert_eq!(
                by_syscall,
                allowed_cpus(&task.dir).unwrap(),
                "thread {}",
                task.tid
            );
            seen_pinned |= by_syscall == CpuSet::from_range(0, 0);
        }
        assert!(seen_pinned, "the pinned thread was among them");
        drop(stop_tx);
        pinned.join().unwrap();
    }
}
