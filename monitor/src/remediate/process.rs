//! The second backend of [`DomainCalls`]: a QEMU without libvirt, pinned with
//! `sched_setaffinity(2)` on each vCPU thread (and on QEMU's other threads for the
//! emulator), its record kept in a state file of its own (see [`super::state_file`]). The
//! journal, compare-and-set, reconcile and restore are the libvirt ones, unchanged.
//!
//! Why not the VM's cpuset cgroup: a QEMU started by hand or by an in-house orchestrator is
//! rarely alone in its cgroup (a user's session scope, a service's), so writing that cgroup's
//! `cpuset.cpus` would move unrelated processes and could not be undone per vCPU. A thread's
//! affinity is what the policy reads and the vCPU's own; a cpuset that excludes the target
//! makes the call fail with EINVAL, reported as such.

use std::path::{Path, PathBuf};

use super::domain::{CallError, CurrentPins, DomainCalls, Scope};
use super::state_file::{self, StateFile};
use super::RemediateError;
use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::policy::record::Record;

/// A running QEMU process and the file of its record.
pub struct ProcessVm {
    vm: Vm,
    proc_root: PathBuf,
    start_time: u64,
    path: PathBuf,
}

impl ProcessVm {
    /// The process of `vm`, checked to be the one scanned (same pid and a live vCPU thread),
    /// with its record under `dir`.
    pub fn find(vm: &Vm, dir: &Path, proc_root: &Path) -> Result<ProcessVm, RemediateError> {
        let start_time =
            state_file::process_start(proc_root, vm.pid).ok_or_else(|| RemediateError::Gone {
                domain: vm.name.clone(),
                pid: vm.pid,
            })?;
        Ok(ProcessVm {
            vm: vm.clone(),
            proc_root: proc_root.to_path_buf(),
            start_time,
            path: state_file::path(dir, vm, start_time),
        })
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn task_dir(&self) -> PathBuf {
        self.proc_root.join(self.vm.pid.to_string()).join("task")
    }

    /// Sets the affinity of thread `tid` of this process, `what` naming it in errors.
    fn set(&self, tid: u32, cpus: &CpuSet, what: &str) -> Result<(), CallError> {
        // Only a thread of this process: a tid recycled by another process is not touched.
        if !self.task_dir().join(tid.to_string()).exists() {
            return Err(CallError {
                message: format!(
                    "{what} (thread {tid}) is gone: QEMU pid {} exited or the thread ended",
                    self.vm.pid
                ),
            });
        }
        set_affinity(tid, cpus).map_err(|e| CallError {
            message: format!("sched_setaffinity of {what} (thread {tid}) to {cpus}: {e}"),
        })
    }
}

/// Why sched_setaffinity failed, in words that say what to do.
fn explain(err: std::io::Error, cpus: &CpuSet) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => format!(
            "{err}: needs CAP_SYS_NICE for a thread of another user (the daemon keeps it only \
             when policy.mode is enforce and [qmp] sockets are configured)"
        ),
        Some(libc::EINVAL) => {
            format!("{err}: CPUs {cpus} are not online or not in the process's cpuset cgroup")
        }
        Some(libc::ESRCH) => format!("{err}: the thread exited"),
        _ => err.to_string(),
    }
}

/// `sched_setaffinity(tid, cpus)`.
fn set_affinity(tid: u32, cpus: &CpuSet) -> Result<(), String> {
    // SAFETY: cpu_set_t is plain bits; zeroed is the empty set CPU_ZERO makes.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter() {
        if cpu as usize >= libc::CPU_SETSIZE as usize {
            return Err(format!("CPU {cpu} is beyond what a cpu_set_t can name"));
        }
        // SAFETY: cpu is below CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    }
    // SAFETY: `set` is a valid cpu_set_t of the size passed; the call only reads it.
    let rc = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(explain(std::io::Error::last_os_error(), cpus))
    }
}

impl DomainCalls for ProcessVm {
    fn current_pins(&self, vm: &Vm) -> Result<CurrentPins, CallError> {
        super::domain::pins_from_proc(vm)
    }

    fn is_persistent(&self) -> bool {
        // A process has no definition to persist pins in.
        false
    }

    fn pin_vcpu(&self, vcpu: u32, cpus: &CpuSet, _scope: Scope) -> Result<(), CallError> {
        let tid = self
            .vm
            .vcpus
            .iter()
            .find(|t| t.vcpu == vcpu)
            .map(|t| t.tid)
            .ok_or_else(|| CallError {
                message: format!("vCPU {vcpu} has no thread in the last scan"),
            })?;
        self.set(tid, cpus, &format!("vCPU {vcpu}"))
    }

    fn pin_emulator(&self, cpus: &CpuSet, _scope: Scope) -> Result<(), CallError> {
        // Every thread of QEMU that is not a vCPU: the main loop, I/O and worker threads.
        let vcpu_tids: Vec<u32> = self.vm.vcpus.iter().map(|t| t.tid).collect();
        let tasks = std::fs::read_dir(self.task_dir()).map_err(|e| CallError {
            message: format!("QEMU pid {}: cannot list its threads: {e}", self.vm.pid),
        })?;
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|tid| !vcpu_tids.contains(tid))
            .take(4096)
        {
            match set_affinity(tid, cpus) {
                Ok(()) => {}
                // A worker thread that ended meanwhile: nothing to pin.
                Err(_) if !self.task_dir().join(tid.to_string()).exists() => {}
                Err(e) if tid == self.vm.pid => {
                    return Err(CallError {
                        message: format!("sched_setaffinity of QEMU's main thread: {e}"),
                    })
                }
                Err(e) => {
                    return Err(CallError {
                        message: format!("sched_setaffinity of QEMU thread {tid}: {e}"),
                    })
                }
            }
        }
        Ok(())
    }

    fn read_state(&self) -> Result<Option<String>, CallError> {
        let file = state_file::read(&self.path).map_err(|e| CallError {
            message: e.to_string(),
        })?;
        // A record of another process (an exited QEMU whose pid came back) is not this one's.
        Ok(file
            .filter(|f| f.pid == self.vm.pid && f.start_time == self.start_time)
            .map(|f| f.record.to_xml()))
    }

    fn write_state(&self, xml: &str, _scope: Scope) -> Result<(), CallError> {
        // The journal hands over the record it built, as the domain metadata's XML.
        let record = Record::parse(xml).map_err(|e| CallError {
            message: format!("state file {}: {e}", self.path.display()),
        })?;
        let file = StateFile {
            format: state_file::FORMAT,
            vm: self.vm.name.clone(),
            pid: self.vm.pid,
            start_time: self.start_time,
            record,
        };
        state_file::write(&self.path, &file).map_err(|e| CallError {
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_what_to_do() {
        let cpus: CpuSet = "1".parse().unwrap();
        let e = |n| explain(std::io::Error::from_raw_os_error(n), &cpus);
        assert!(
            e(libc::EPERM).contains("needs CAP_SYS_NICE"),
            "{}",
            e(libc::EPERM)
        );
        assert!(
            e(libc::EINVAL).contains("cpuset cgroup"),
            "{}",
            e(libc::EINVAL)
        );
        assert!(e(libc::ESRCH).contains("exited"), "{}", e(libc::ESRCH));
    }
}
