//! vCPU threads of a QEMU process, from /proc.

use std::path::Path;

use crate::cpuset::CpuSet;

use super::VcpuThread;

/// QEMU names its KVM vCPU threads "CPU <index>/KVM".
fn vcpu_index(comm: &str) -> Option<u32> {
    comm.trim()
        .strip_prefix("CPU ")?
        .strip_suffix("/KVM")?
        .parse()
        .ok()
}

/// vCPU threads of process `pid`, sorted by vCPU index. A process that exits while we read it
/// is an error naming it; a thread that exits is simply not listed.
pub fn vcpu_threads(proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>, String> {
    let task_dir = proc_root.join(pid.to_string()).join("task");
    let entries = std::fs::read_dir(&task_dir).map_err(|e| {
        format!(
            "QEMU process {pid} is gone or unreadable ({}: {e})",
            task_dir.display()
        )
    })?;
    let mut vcpus = Vec::new();
    for entry in entries.flatten() {
        let Some(tid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let Some(vcpu) = vcpu_index(&comm) else {
            continue;
        };
        let Ok(allowed_cpus) = allowed_cpus(&entry.path()) else {
            continue;
        };
        vcpus.push(VcpuThread {
            vcpu,
            tid,
            allowed_cpus,
        });
    }
    vcpus.sort_by_key(|v| v.vcpu);
    Ok(vcpus)
}

/// `Cpus_allowed_list` of a task directory.
pub fn allowed_cpus(task_dir: &Path) -> Result<CpuSet, String> {
    let path = task_dir.join("status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .ok_or_else(|| format!("{}: no Cpus_allowed_list", path.display()))?;
    list.parse().map_err(|e| format!("{}: {e}", path.display()))
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
    fn reads_this_process_affinity_and_reports_a_missing_process() {
        let own = allowed_cpus(Path::new("/proc/self")).unwrap();
        assert!(!own.is_empty());
        let err = vcpu_threads(Path::new("/proc"), u32::MAX).unwrap_err();
        assert!(err.contains(&u32::MAX.to_string()), "{err}");
    }
}
