//! Stopping the real libvirtd (SIGSTOP) for the hang tests, with a guard that continues it
//! whatever the test does next, so a failing test never leaves libvirtd stopped.

/// libvirtd stopped by this test; dropped, it gets SIGCONT.
pub struct Stopped(i32);

impl Stopped {
    /// Stops libvirtd, whose pid scripts/setup.sh has it write to /run/libvirtd.pid.
    pub fn stop() -> Stopped {
        let text = std::fs::read_to_string("/run/libvirtd.pid")
            .expect("/run/libvirtd.pid (libvirtd started by scripts/setup.sh)");
        let pid: i32 = text.trim().parse().expect("a pid in /run/libvirtd.pid");
        // SAFETY: kill(2) only signals libvirtd; the guard continues it on drop.
        let rc = unsafe { libc::kill(pid, libc::SIGSTOP) };
        assert_eq!(rc, 0, "SIGSTOP libvirtd (pid {pid})");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: kill(2) only signals the libvirtd this guard stopped.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}
