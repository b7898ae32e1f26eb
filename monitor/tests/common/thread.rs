//! This test process's own threads: ids, the kernel's run-time clock, CPU pinning, and CPU
//! cgroups (v1 `cpu` hierarchy) to move them into.

use std::path::{Path, PathBuf};

/// The calling thread's id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Thread `tid`'s run time by the kernel (first field of schedstat), in ns.
pub fn schedstat_ns(tid: u32) -> u64 {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).expect("schedstat readable");
    text.split_whitespace()
        .next()
        .and_then(|ns| ns.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no run time in {text:?}"))
}

/// Pins the calling thread to `cpu`.
pub fn pin_self(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

/// Burns `ns` of the calling thread's own CPU time (not wall time: on a loaded host other
/// threads take their share).
pub fn burn(tid: u32, ns: u64) {
    let start = schedstat_ns(tid);
    while schedstat_ns(tid) - start < ns {
        std::hint::spin_loop();
    }
}

/// The root of the cgroup v1 `cpu` hierarchy.
const CPU_V1: &str = "/sys/fs/cgroup/cpu";

/// A chain of nested CPU cgroups made for one test (`pinsight-test-PID/a/b/...` under the v1
/// `cpu` hierarchy), removed on drop after every thread of this process in it went back to
/// the root. Fails, never skips, on a host without the v1 `cpu` hierarchy.
pub struct CpuCgroups {
    dirs: Vec<PathBuf>,
}

impl CpuCgroups {
    /// Makes `levels` nested cgroups: the deepest is at depth `levels`.
    pub fn make(levels: usize) -> CpuCgroups {
        assert!(
            Path::new(CPU_V1).join("tasks").exists(),
            "this test moves threads between CPU cgroups of the cgroup v1 `cpu` hierarchy ({CPU_V1}), which this host does not have"
        );
        let mut dir = Path::new(CPU_V1).join(format!("pinsight-test-{}", std::process::id()));
        let mut dirs = Vec::new();
        for level in 0..levels {
            if level > 0 {
                dir = dir.join(format!("l{}", level + 1));
            }
            std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
            dirs.push(dir.clone());
        }
        CpuCgroups { dirs }
    }

    /// Moves thread `tid` into the cgroup at `depth` (0: the root).
    pub fn move_thread(&self, tid: u32, depth: usize) {
        self.write(depth, "tasks", tid);
    }

    /// Moves this whole process (every thread) into the cgroup at `depth`.
    pub fn move_process(&self, depth: usize) {
        self.write(depth, "cgroup.procs", std::process::id());
    }

    fn write(&self, depth: usize, file: &str, id: u32) {
        let dir = match depth {
            0 => PathBuf::from(CPU_V1),
            _ => self.dirs[depth - 1].clone(),
        };
        let path = dir.join(file);
        std::fs::write(&path, id.to_string())
            .unwrap_or_else(|e| panic!("write {id} to {}: {e}", path.display()));
    }
}

impl Drop for CpuCgroups {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Path::new(CPU_V1).join("cgroup.procs"),
            std::process::id().to_string(),
        );
        for dir in self.dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                eprintln!("cleanup: rmdir {}: {e}", dir.display());
            }
        }
    }
}
