//! `perf stat` as the independent counter of agreement tests: one tracepoint in one thread
//! (`-t TID`, the vCPU thread itself, not the whole process). perf starts with its counter
//! disabled (`-D -1`) and is enabled through its control FIFO, which answers `ack` once the
//! counter is live: the test knows perf counts, instead of guessing how long perf takes to
//! start and attach.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::wait_for;

/// A running `perf stat -e EVENT -t TID`, killed on drop if `finish` was not reached.
pub struct PerfStat {
    child: Option<Child>,
    event: String,
    /// Holds the two FIFOs; removed on drop.
    _dir: TempDir,
    ctl: File,
    ack: File,
}

impl PerfStat {
    /// Starts perf counting `event` (e.g. "kvm:kvm_userspace_exit") in thread `tid`, with the
    /// counter still disabled; `enable` starts it.
    pub fn start(event: &str, tid: u32) -> PerfStat {
        let dir = tempfile::Builder::new()
            .prefix("pinsight-perf-")
            .tempdir()
            .expect("create a temporary directory for perf's control FIFOs");
        let (ctl_path, ack_path) = (dir.path().join("ctl"), dir.path().join("ack"));
        // Read-write opens never block on a FIFO (Linux), whichever side comes first.
        let (ctl, ack) = (fifo(&ctl_path), fifo(&ack_path));
        let control = format!("fifo:{},{}", ctl_path.display(), ack_path.display());
        let child = Command::new("perf")
            .args([
                "stat",
                "-x,",
                "-D",
                "-1",
                "--control",
                &control,
                "-e",
                event,
            ])
            .args(["-t", &tid.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run perf (linux-perf, installed by scripts/setup.sh)");
        PerfStat {
            child: Some(child),
            event: event.to_string(),
            _dir: dir,
            ctl,
            ack,
        }
    }

    /// Enables the counter and waits for perf's `ack`: from then on every event counts.
    pub fn enable(&mut self) {
        self.ctl
            .write_all(b"enable\n")
            .expect("write to perf's control FIFO");
        let mut answer = Vec::new();
        wait_for(Duration::from_secs(20), "perf's ack of `enable`", || {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("perf exited with {status}: {}", self.stderr());
            }
            let mut buf = [0u8; 16];
            match self.ack.read(&mut buf) {
                Ok(n) => answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read perf's ack FIFO: {e}"),
            }
            // perf writes "ack\n" and its C string's NUL.
            answer.windows(4).any(|w| w == b"ack\n").then_some(())
        });
    }

    /// Stops perf (SIGINT: it prints its count and exits) and returns the count.
    pub fn finish(mut self) -> u64 {
        let child = self.child.as_mut().expect("perf runs until finish");
        // SAFETY: kill on the pid of a child we spawned and have not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = wait_for(Duration::from_secs(20), "perf to exit after SIGINT", || {
            child.try_wait().expect("wait for perf")
        });
        let text = self.stderr();
        self.child = None;
        // perf prints its counts, then ends itself with the SIGINT it caught.
        assert!(
            status.success() || status.signal() == Some(libc::SIGINT),
            "perf exited with {status}:\n{text}"
        );
        // CSV (-x,): "COUNT,UNIT,EVENT,RUN_NS,PERCENT,,"; "<not counted>" if the thread never
        // ran while enabled.
        text.lines()
            .find(|l| l.split(',').nth(2) == Some(self.event.as_str()))
            .and_then(|l| l.split(',').next())
            .and_then(|count| count.trim().parse().ok())
            .unwrap_or_else(|| panic!("no count of {} in perf's output:\n{text}", self.event))
    }

    /// What perf wrote to stderr so far (all of it once it has exited).
    fn stderr(&mut self) -> String {
        let mut text = String::new();
        if let Some(err) = self.child.as_mut().and_then(|c| c.stderr.as_mut()) {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for PerfStat {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Creates a FIFO at `path` and opens it read-write, non-blocking.
fn fifo(path: &Path) -> File {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .expect("a temporary path has no NUL byte");
    // SAFETY: mkfifo reads the NUL-terminated path, which lives until the call returns.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(
        rc,
        0,
        "mkfifo {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap_or_else(|e| panic!("open FIFO {}: {e}", path.display()))
}
