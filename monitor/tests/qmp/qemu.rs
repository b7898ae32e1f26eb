//! A QEMU process without libvirt for tests/qmp.rs, killed by its pid on drop, and the
//! test's own QMP client on the QEMU's control socket.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crate::common::{spin_guest, wait_for, DEFAULT_SPIN_ITERATIONS};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A QEMU process this test started, killed by its pid on drop; its directory (sockets,
/// log) removed with it.
pub struct QemuVm {
    pub child: Child,
    pub name: String,
    pub dir: PathBuf,
    /// The socket the daemon is told of.
    pub qmp: PathBuf,
    /// The test's own control socket.
    pub control: PathBuf,
    pub vcpu_tid: u32,
}

impl QemuVm {
    /// Starts a 1-vCPU busy guest; `debug_threads` names its vCPU thread "CPU 0/KVM".
    pub fn start(hint: &str, debug_threads: bool) -> QemuVm {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("pinsight-qmp-{hint}-{}-{n}", std::process::id());
        let dir = PathBuf::from(format!("/tmp/{name}"));
        std::fs::create_dir_all(&dir).expect("create the VM's directory");
        let (qmp, control) = (dir.join("vm.qmp"), dir.join("control.qmp"));
        let log = std::fs::File::create(dir.join("qemu.log")).expect("create qemu.log");
        let name_arg = if debug_threads {
            format!("guest={name},debug-threads=on")
        } else {
            name.clone()
        };
        let child = Command::new("qemu-system-x86_64")
            .args(["-enable-kvm", "-machine", "pc", "-m", "128", "-smp", "1"])
            .args(["-nodefaults", "-nographic", "-display", "none"])
            .args(["-name", &name_arg, "-uuid", &uuid(n)])
            .arg("-kernel")
            .arg(spin_guest(DEFAULT_SPIN_ITERATIONS))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", qmp.display()))
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", control.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn qemu-system-x86_64 (install qemu-system-x86: scripts/setup.sh)");
        let mut vm = QemuVm {
            child,
            name,
            dir,
            qmp,
            control,
            vcpu_tid: 0,
        };
        let control = vm.control.clone();
        let log = vm.dir.join("qemu.log");
        let tid = wait_for(Duration::from_secs(20), "QEMU's control socket", || {
            if !control.exists() {
                return None;
            }
            let reply = Control::open(&control).execute("query-cpus-fast");
            let reply: serde_json::Value = serde_json::from_str(&reply).ok()?;
            let tid = reply.pointer("/return/0/thread-id")?.as_u64()?;
            u32::try_from(tid).ok()
        });
        assert!(
            vm.child.try_wait().expect("try_wait on QEMU").is_none(),
            "QEMU exited: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        vm.vcpu_tid = tid;
        vm
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Pins the vCPU thread with taskset (no libvirt to ask).
    pub fn pin(&self, cpus: &str) {
        let out = Command::new("taskset")
            .args(["-pc", cpus, &self.vcpu_tid.to_string()])
            .output()
            .expect("run taskset");
        assert!(out.status.success(), "taskset: {out:?}");
    }

    pub fn task_file(&self, file: &str) -> String {
        let path = format!("/proc/{}/task/{}/{file}", self.pid(), self.vcpu_tid);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
    }

    pub fn schedstat_run_ns(&self) -> u64 {
        let s = self.task_file("schedstat");
        let first = s.split_whitespace().next().unwrap_or_default();
        first
            .parse()
            .unwrap_or_else(|e| panic!("bad schedstat {s:?}: {e}"))
    }

    /// QMP `stop`, then waits until the vCPU thread sleeps: the fence of an interval.
    pub fn stop(&self) {
        Control::open(&self.control).execute("stop");
        wait_for(Duration::from_secs(5), "the stopped vCPU to sleep", || {
            let stat = self.task_file("stat");
            let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
            (state != 'R').then_some(())
        });
    }

    pub fn cont(&self) {
        Control::open(&self.control).execute("cont");
    }

    /// Kills QEMU now (SIGKILL: it cannot remove its sockets) and reaps it.
    pub fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            // SAFETY: kill on the pid of our own child, not yet reaped (wait reaps it).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

impl Drop for QemuVm {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn uuid(n: u32) -> String {
    format!(
        "5e1f0000-0000-4000-8000-{:012x}",
        std::process::id() * 100 + n
    )
}

/// The test's QMP client on its control socket.
pub struct Control {
    reader: BufReader<UnixStream>,
}

impl Control {
    pub fn open(socket: &Path) -> Control {
        let stream = UnixStream::connect(socket).unwrap_or_else(|e| panic!("{socket:?}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("set a read timeout");
        let mut control = Control {
            reader: BufReader::new(stream),
        };
        control.line();
        control.execute("qmp_capabilities");
        control
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a QMP line");
        line
    }

    /// Sends `command`; its reply line (events skipped).
    pub fn execute(&mut self, command: &str) -> String {
        let request = format!("{{\"execute\": \"{command}\"}}\n");
        self.reader
            .get_mut()
            .write_all(request.as_bytes())
            .expect("write to the control socket");
        loop {
            let line = self.line();
            if !line.contains("\"event\"") {
                assert!(line.contains("\"return\""), "{command}: {line}");
                return line;
            }
        }
    }
}
