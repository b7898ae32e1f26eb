//! A test VM's QEMU threads as the kernel shows them in /proc: each vCPU thread's allowed
//! CPUs, run time, state and context switches, every thread of the process, and stopping
//! the whole process (`freeze`) until a guard drops.

use super::vm::TestVm;
use super::wait_for;
use std::collections::BTreeSet;
use std::time::Duration;

impl TestVm {
    /// `Cpus_allowed_list` of vCPU `vcpu`'s thread, e.g. "0-1".
    pub fn allowed_cpus(&self, vcpu: u32) -> String {
        let status = self.task_file(vcpu, "status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"));
        line.unwrap_or_else(|| panic!("no Cpus_allowed_list for vCPU {vcpu} of {}", self.name))
            .trim()
            .to_string()
    }

    /// Nanoseconds vCPU `vcpu`'s thread has run (first field of its schedstat).
    pub fn schedstat_run_ns(&self, vcpu: u32) -> u64 {
        let schedstat = self.task_file(vcpu, "schedstat");
        let first = schedstat.split_whitespace().next().unwrap_or_default();
        first
            .parse()
            .unwrap_or_else(|e| panic!("bad schedstat {schedstat:?} of {}: {e}", self.name))
    }

    /// The scheduler state letter of vCPU `vcpu`'s thread (`R` running, `S` sleeping, ...).
    pub fn thread_state(&self, vcpu: u32) -> char {
        let stat = self.task_file(vcpu, "stat");
        // "tid (comm) S ...": the comm ("CPU 0/KVM") has spaces, so split after its ')'.
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .unwrap_or_else(|| panic!("bad stat {stat:?} of vCPU {vcpu} of {}", self.name))
    }

    /// Context switches of vCPU `vcpu`'s thread so far (voluntary + involuntary): one per
    /// stint on a CPU.
    pub fn context_switches(&self, vcpu: u32) -> u64 {
        let status = self.task_file(vcpu, "status");
        let count = |key: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {key} for vCPU {vcpu} of {}", self.name))
        };
        count("voluntary_ctxt_switches:") + count("nonvoluntary_ctxt_switches:")
    }

    /// Every thread of the QEMU process now: (tid, name), by tid.
    pub fn threads(&self) -> Vec<(u32, String)> {
        let dir = format!("/proc/{}/task", self.pid);
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {dir}: {e}"));
        let mut threads: Vec<(u32, String)> = entries
            .flatten()
            .filter_map(|e| {
                let tid = e.file_name().to_str()?.parse().ok()?;
                let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
                Some((tid, comm.trim().to_string()))
            })
            .collect();
        threads.sort();
        threads
    }

    /// Nanoseconds thread `tid` of the QEMU process has run (first field of its schedstat).
    pub fn thread_run_ns(&self, tid: u32) -> u64 {
        let path = format!("/proc/{}/task/{tid}/schedstat", self.pid);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let first = text.split_whitespace().next().unwrap_or_default();
        first
            .parse()
            .unwrap_or_else(|e| panic!("bad schedstat {text:?} in {path}: {e}"))
    }

    /// Stops the whole QEMU process (SIGSTOP: every thread, the main loop and IOThreads too,
    /// which `suspend` leaves running) until the guard drops (SIGCONT). Returns once every
    /// thread is stopped, so their run-time counters stand still.
    pub fn freeze(&self) -> Frozen {
        // SAFETY: kill(2) on the pid of the QEMU process this guard started.
        let rc = unsafe { libc::kill(self.pid as i32, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP to QEMU {} failed", self.pid);
        let frozen = Frozen { pid: self.pid };
        let what = format!("every thread of QEMU {} ({}) to stop", self.pid, self.name);
        wait_for(Duration::from_secs(5), &what, || {
            self.threads()
                .iter()
                .all(|(tid, _)| {
                    let path = format!("/proc/{}/task/{tid}/stat", self.pid);
                    let stat = std::fs::read_to_string(path).unwrap_or_default();
                    // Gone, or stopped ('T'); the name may hold spaces: split after ')'.
                    stat.rsplit_once(')')
                        .and_then(|(_, rest)| rest.trim_start().chars().next())
                        .is_none_or(|state| state == 'T')
                })
                .then_some(())
        });
        frozen
    }

    fn task_file(&self, vcpu: u32, file: &str) -> String {
        let path = format!("/proc/{}/task/{}/{file}", self.pid, self.vcpu_tid(vcpu));
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }
}

/// A QEMU process stopped by [`TestVm::freeze`]; continued (SIGCONT) on drop, also while a
/// failing test unwinds.
#[derive(Debug)]
pub struct Frozen {
    pid: u32,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid this guard stopped.
        unsafe { libc::kill(self.pid as i32, libc::SIGCONT) };
    }
}

/// The tids of threads `CPU 0/KVM` .. `CPU n-1/KVM` of `pid`, once all `vcpus` exist.
pub(super) fn vcpu_threads(pid: u32, vcpus: usize) -> Option<Vec<u32>> {
    let mut tids = vec![None; vcpus];
    for entry in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let index = comm
            .trim()
            .strip_prefix("CPU ")
            .and_then(|r| r.strip_suffix("/KVM"));
        let tid = entry
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u32>().ok());
        if let (Some(Ok(i)), Some(tid)) = (index.map(str::parse::<usize>), tid) {
            if let Some(slot) = tids.get_mut(i) {
                *slot = Some(tid);
            }
        }
    }
    tids.into_iter().collect()
}

/// Parses a cpulist such as "0-3,^2,5" into CPU numbers; panics on malformed input.
pub fn parse_cpu_list(list: &str) -> BTreeSet<u32> {
    let mut cpus = BTreeSet::new();
    let bad = |part: &str| -> ! { panic!("bad cpu list {list:?} at {part:?}") };
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (exclude, range) = match part.strip_prefix('^') {
            Some(r) => (true, r),
            None => (false, part),
        };
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let (Ok(lo), Ok(hi)) = (lo.parse::<u32>(), hi.parse::<u32>()) else {
            bad(part)
        };
        if lo > hi {
            bad(part);
        }
        for cpu in lo..=hi {
            if exclude {
                cpus.remove(&cpu);
            } else {
                cpus.insert(cpu);
            }
        }
    }
    cpus
}
