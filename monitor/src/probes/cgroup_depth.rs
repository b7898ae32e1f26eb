//! A thread's CPU cgroup depth as the scheduler counts it (`se.depth`: 0 in the root task
//! group, 1 a level down, ...), read from /proc/TID/cgroup: what the depth filter lets through
//! for a thread from the moment it is tracked, before the probes have seen it switch.
//!
//! cgroup v1: the depth is that of the thread's cgroup in the hierarchy the `cpu` controller
//! is mounted on. cgroup v2: a cgroup has a task group of its own only when the `cpu`
//! controller is enabled for it (listed in its `cgroup.controllers`), else its tasks are
//! scheduled in the nearest ancestor's that has one. Paths are relative to the reader's cgroup
//! namespace, so a daemon in a namespace of its own reads depths too small: the daemon's check
//! for threads that run unseen catches that (`depth_filter`).

use std::io;
use std::path::Path;

use crate::cgroupfs::{controller_cgroup, v2_root, ControllerCgroup};

/// The scheduler's depth of the thread whose /proc/TID/cgroup reads `text`, with the v2
/// hierarchy mounted at `cgroup_fs` (`/sys/fs/cgroup`, or its `unified` directory on a hybrid
/// host).
pub fn cpu_cgroup_depth(text: &str, cgroup_fs: &Path) -> io::Result<u32> {
    let path = match controller_cgroup(text, "cpu") {
        Some(ControllerCgroup::V1(path)) => return Ok(components(path).count() as u32),
        Some(ControllerCgroup::V2(path)) => path,
        None => {
            return Err(invalid(format!(
                "no cpu hierarchy and no cgroup v2 line in {text:?}"
            )))
        }
    };
    let root = v2_root(cgroup_fs);
    let parts: Vec<&str> = components(path).collect();
    for level in (1..=parts.len()).rev() {
        let file = root
            .join(parts[..level].join("/"))
            .join("cgroup.controllers");
        let enabled = std::fs::read_to_string(&file)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        if enabled.split_whitespace().any(|c| c == "cpu") {
            return Ok(level as u32);
        }
    }
    Ok(0)
}

/// The depth of thread `tid` on this host (see [`cpu_cgroup_depth`]).
pub fn of_thread(tid: u32) -> io::Result<u32> {
    let file = format!("/proc/{tid}/cgroup");
    let text = std::fs::read_to_string(&file)
        .map_err(|e| io::Error::new(e.kind(), format!("{file}: {e}")))?;
    cpu_cgroup_depth(&text, Path::new("/sys/fs/cgroup"))
        .map_err(|e| io::Error::new(e.kind(), format!("{file}: {e}")))
}

fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1: &str = "9:name=systemd:/\n4:memory:/machine/qemu-1-vm.libvirt-qemu\n\
                      1:cpu:/machine/qemu-1-vm.libvirt-qemu/vcpu0\n2:cpuacct:/\n0::/\n";

    #[test]
    fn v1_counts_the_levels_of_the_cpu_hierarchy() {
        let none = Path::new("/nonexistent");
        assert_eq!(cpu_cgroup_depth(V1, none).unwrap(), 3);
        assert_eq!(
            cpu_cgroup_depth("3:cpu,cpuacct:/\n0::/\n", none).unwrap(),
            0
        );
        assert_eq!(cpu_cgroup_depth("3:cpuacct,cpu:/a/b\n", none).unwrap(), 2);
        // cpuset is not cpu.
        assert!(cpu_cgroup_depth("3:cpuset:/a\n", none).is_err());
    }

    #[test]
    fn v2_stops_at_the_deepest_cgroup_with_the_cpu_controller() {
        let fs = tempfile::tempdir().unwrap();
        let write = |dir: &str, controllers: &str| {
            let dir = fs.path().join(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("cgroup.controllers"), controllers).unwrap();
        };
        write("", "cpuset cpu io memory pids");
        write("machine.slice", "cpuset cpu io memory pids");
        write("machine.slice/vm.scope", "cpu memory pids");
        write("machine.slice/vm.scope/libvirt", "cpu memory");
        write("machine.slice/vm.scope/libvirt/vcpu0", "cpu");
        write("system.slice", "cpu memory pids");
        write("system.slice/sshd.service", "memory pids");
        let depth = |path: &str| cpu_cgroup_depth(&format!("0::{path}\n"), fs.path());
        assert_eq!(depth("/machine.slice/vm.scope/libvirt/vcpu0").unwrap(), 4);
        assert_eq!(depth("/system.slice/sshd.service").unwrap(), 1);
        assert_eq!(depth("/").unwrap(), 0);
        let gone = depth("/machine.slice/gone.scope").unwrap_err().to_string();
        assert!(gone.contains("gone.scope/cgroup.controllers"), "{gone}");
    }

    #[test]
    fn a_hybrid_host_reads_the_unified_directory() {
        let fs = tempfile::tempdir().unwrap();
        let dir = fs.path().join("unified/a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(fs.path().join("unified/cgroup.controllers"), "").unwrap();
        std::fs::write(dir.join("cgroup.controllers"), "").unwrap();
        assert_eq!(cpu_cgroup_depth("0::/a\n", fs.path()).unwrap(), 0);
    }

    #[test]
    fn a_malformed_file_is_named_in_the_error() {
        let e = cpu_cgroup_depth("garbage\n", Path::new("/")).unwrap_err();
        assert!(e.to_string().contains("garbage"), "{e}");
    }
}
