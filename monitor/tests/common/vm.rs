//! Real KVM VMs under libvirt for tests: transient domains that are destroyed (by name) when
//! their `TestVm` guard drops, also while a failing test unwinds.

use super::stale::reap_stale;
use super::virsh::{destroy, virsh, virsh_ok};
use super::{repo_root, wait_for};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, Once, OnceLock};
use std::time::Duration;

/// Every test domain's name starts with this; stale ones are found by it.
pub(super) const NAME_PREFIX: &str = "pinsight-test-";
/// Countdown between two port-IO exits of the busy guest (see scripts/spin-guest.S).
pub const DEFAULT_SPIN_ITERATIONS: u32 = 2000;
/// vCPUs of the idle PXE guest; the busy guest has 1 (only the boot vCPU would run anyway).
pub const IDLE_VCPUS: usize = 2;

/// What kind of VM `TestVm::start` creates.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Part of the domain name, `[A-Za-z0-9_]` and `-` only.
    pub name_hint: &'static str,
    /// true: 1 vCPU running the spin guest at ~100%; false: 2 mostly idle vCPUs (PXE, no disk).
    pub busy: bool,
    /// Loop count of the spin guest (fewer iterations, more KVM exits per second).
    pub spin_iterations: u32,
    /// Extra children of `<metadata>`, e.g. the operator's `urn:pinsight:domain:1` element.
    pub metadata_xml: Option<String>,
    /// `<vcpu cpuset=...>`: where the vCPUs may run from the start.
    pub vcpu_cpuset: Option<String>,
    /// QEMU machine type: "pc", or "microvm" (no PCI bus: no USB controller either).
    pub machine: &'static str,
    /// Guest RAM in MiB, all of it touched at start (`<allocation mode='immediate'/>`), for
    /// tests that count where memory sits; `None`: 128 MiB, touched as the guest goes.
    pub preallocated_mib: Option<u32>,
    /// `<iothreads>`: IOThreads libvirt has QEMU create ("IO iothread1", ...).
    pub iothreads: u32,
    /// `<numatune>` element of the domain (its memory policy), e.g.
    /// `<numatune><memory mode='restrictive' nodeset='0'/></numatune>`.
    pub numatune_xml: Option<&'static str>,
}

impl Default for VmOptions {
    fn default() -> Self {
        VmOptions {
            name_hint: "vm",
            busy: true,
            spin_iterations: DEFAULT_SPIN_ITERATIONS,
            metadata_xml: None,
            vcpu_cpuset: None,
            machine: "pc",
            preallocated_mib: None,
            iothreads: 0,
            numatune_xml: None,
        }
    }
}

impl VmOptions {
    /// A busy 1-vCPU spin guest with default iterations.
    pub fn busy(name_hint: &'static str) -> Self {
        VmOptions {
            name_hint,
            busy: true,
            ..Default::default()
        }
    }

    /// An idle 2-vCPU PXE guest.
    pub fn idle(name_hint: &'static str) -> Self {
        VmOptions {
            name_hint,
            busy: false,
            ..Default::default()
        }
    }
}

/// A running libvirt domain, destroyed (and undefined, if defined) by name on drop.
#[derive(Debug)]
pub struct TestVm {
    pub name: String,
    pub uuid: String,
    /// QEMU's pid, from /run/libvirt/qemu/NAME.pid.
    pub pid: u32,
    /// Thread id of vCPU N at index N (threads named `CPU N/KVM`).
    pub vcpu_tids: Vec<u32>,
    /// Defined with an inactive config (see `TestVm::start_defined`).
    pub persistent: bool,
}

static VM_COUNTER: AtomicU32 = AtomicU32::new(0);
static REAP_STALE: Once = Once::new();

impl TestVm {
    /// Starts a transient domain `pinsight-test-<hint>-<pid>-<n>` and waits for its vCPU threads.
    pub fn start(opts: VmOptions) -> TestVm {
        TestVm::start_as(opts, false)
    }

    /// Like [`TestVm::start`], but defined (`virsh define` + `start`, so it has an inactive
    /// config) instead of transient (`virsh create`); undefined on drop.
    pub fn start_defined(opts: VmOptions) -> TestVm {
        TestVm::start_as(opts, true)
    }

    fn start_as(opts: VmOptions, persistent: bool) -> TestVm {
        assert!(
            !opts.name_hint.is_empty()
                && opts
                    .name_hint
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
            "name_hint {:?} must be non-empty [A-Za-z0-9_-]",
            opts.name_hint
        );
        REAP_STALE.call_once(reap_stale);
        let n = VM_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("{NAME_PREFIX}{}-{}-{n}", opts.name_hint, std::process::id());
        let kernel = opts.busy.then(|| spin_guest(opts.spin_iterations));
        let vcpus = if opts.busy { 1 } else { IDLE_VCPUS };
        let xml = domain_xml(&name, &opts, vcpus, kernel.as_deref());

        let xml_path = scratch_dir().join(format!("{name}.xml"));
        std::fs::write(&xml_path, &xml)
            .unwrap_or_else(|e| panic!("write {}: {e}", xml_path.display()));
        let verb = if persistent { "define" } else { "create" };
        let created = virsh(&[verb, path_str(&xml_path)]);
        let _ = std::fs::remove_file(&xml_path);
        if let Err(e) = created {
            panic!("virsh {verb} of {name} failed: {e}\n--- domain XML ---\n{xml}");
        }

        // From here on the guard exists, so a panic below still destroys (and undefines) the
        // domain.
        let mut vm = TestVm {
            name,
            uuid: String::new(),
            pid: 0,
            vcpu_tids: Vec::new(),
            persistent,
        };
        if persistent {
            virsh_ok(&["start", &vm.name]);
        }
        vm.uuid = virsh_ok(&["domuuid", &vm.name]).trim().to_string();
        let pid_file = format!("/run/libvirt/qemu/{}.pid", vm.name);
        vm.pid = wait_for(
            Duration::from_secs(30),
            &format!("QEMU pid in {pid_file}"),
            || std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok(),
        );
        let pid = vm.pid;
        let what = format!("{vcpus} vCPU thread(s) of {} (pid {pid})", vm.name);
        vm.vcpu_tids = wait_for(Duration::from_secs(30), &what, || vcpu_threads(pid, vcpus));
        vm
    }

    /// Thread id of vCPU `vcpu`; panics if the VM has no such vCPU.
    pub fn vcpu_tid(&self, vcpu: u32) -> u32 {
        *self.vcpu_tids.get(vcpu as usize).unwrap_or_else(|| {
            panic!(
                "{} has {} vCPU(s), no vCPU {vcpu}",
                self.name,
                self.vcpu_tids.len()
            )
        })
    }

    /// Pins vCPU `vcpu` to `cpus` live through libvirt and asserts the thread's affinity changed.
    pub fn pin_vcpu(&self, vcpu: u32, cpus: &str) {
        virsh_ok(&["vcpupin", &self.name, &vcpu.to_string(), cpus, "--live"]);
        let want = parse_cpu_list(cpus);
        let what = format!("vCPU {vcpu} of {} allowed on {cpus}", self.name);
        wait_for(Duration::from_secs(5), &what, || {
            (parse_cpu_list(&self.allowed_cpus(vcpu)) == want).then_some(())
        });
    }

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

    /// Pauses the guest (`virsh suspend`) and waits until every vCPU thread sleeps. A paused
    /// vCPU thread neither runs nor exits, so two counters read while it is paused cover the
    /// same stints: agreement tests fence their interval with `suspend`/`resume`.
    pub fn suspend(&self) {
        // QEMU's `stop` returns once every vCPU has left KVM_RUN and marked itself stopped;
        // the thread may still be on its way into the wait, hence the check for sleep.
        virsh_ok(&["suspend", &self.name]);
        let what = format!("the vCPU threads of paused {} to sleep", self.name);
        wait_for(Duration::from_secs(5), &what, || {
            (0..self.vcpu_tids.len() as u32)
                .all(|vcpu| self.thread_state(vcpu) != 'R')
                .then_some(())
        });
    }

    /// Restarts a guest paused by `suspend` (`virsh resume`).
    pub fn resume(&self) {
        virsh_ok(&["resume", &self.name]);
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

    /// Replaces this domain's metadata element in namespace `ns_uri` (prefix `key`) live.
    pub fn set_metadata(&self, ns_uri: &str, key: &str, xml: &str) {
        let args = [
            "metadata", &self.name, "--uri", ns_uri, "--key", key, "--set", xml, "--live",
        ];
        virsh_ok(&args);
    }

    /// The live metadata element in namespace `ns_uri`, None if the domain has none.
    pub fn metadata(&self, ns_uri: &str) -> Option<String> {
        virsh(&["metadata", &self.name, "--uri", ns_uri, "--live"]).ok()
    }

    /// The inactive (persistent) domain XML (`virsh dumpxml --inactive`).
    pub fn inactive_xml(&self) -> String {
        virsh_ok(&["dumpxml", "--inactive", &self.name])
    }

    /// The live domain XML (`virsh dumpxml`).
    pub fn dumpxml(&self) -> String {
        virsh_ok(&["dumpxml", &self.name])
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

impl Drop for TestVm {
    fn drop(&mut self) {
        // A panic here while the test already unwinds would abort the whole test binary.
        if let Err(e) = destroy(&self.name) {
            eprintln!("warning: could not destroy test domain {}: {e}", self.name);
        }
        if self.persistent {
            if let Err(e) = virsh(&["undefine", &self.name]) {
                eprintln!("warning: could not undefine test domain {}: {e}", self.name);
            }
        }
    }
}

/// Whether libvirt knows a domain of this name (running or not).
pub fn domain_exists(name: &str) -> bool {
    virsh(&["domstate", name]).is_ok()
}

/// Path of the spin guest ELF for `iterations`, built once per test process.
pub fn spin_guest(iterations: u32) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<u32, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(path) = built.get(&iterations) {
        return path.clone();
    }
    let script = repo_root().join("scripts/build-spin-guest.sh");
    let out = Command::new(&script)
        .arg(scratch_dir())
        .arg(iterations.to_string())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{} failed ({}): {}{}",
        script.display(),
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    let path = PathBuf::from(stdout.trim());
    assert!(
        path.is_file(),
        "{} printed {path:?}, which is no file",
        script.display()
    );
    built.insert(iterations, path.clone());
    path
}

/// Per-process directory for guest ELFs and domain XML: /tmp/pinsight-test-guest-<pid>.
fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/pinsight-test-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
}

fn domain_xml(name: &str, opts: &VmOptions, vcpus: usize, kernel: Option<&Path>) -> String {
    let cpuset = opts
        .vcpu_cpuset
        .as_deref()
        .map(|c| format!(" cpuset='{c}'"))
        .unwrap_or_default();
    let boot = match kernel {
        Some(elf) => format!("<kernel>{}</kernel>", elf.display()),
        None => "<boot dev='network'/>".to_string(),
    };
    let metadata = opts.metadata_xml.as_deref().unwrap_or_default();
    let iothreads = match opts.iothreads {
        0 => String::new(),
        n => format!("<iothreads>{n}</iothreads>"),
    };
    let machine = opts.machine;
    let numatune = opts.numatune_xml.unwrap_or_default();
    let (memory_mib, backing) = match opts.preallocated_mib {
        Some(mib) => (
            mib,
            "<memoryBacking><allocation mode='immediate'/></memoryBacking>",
        ),
        None => (128, ""),
    };
    // microvm has no PCI bus, so libvirt's default USB controller must go ("No PCI buses
    // available" otherwise); the balloon is off for every machine type.
    let usb = if machine == "microvm" {
        "<controller type='usb' model='none'/>"
    } else {
        ""
    };
    format!(
        "<domain type='kvm'>
  <name>{name}</name>
  <metadata>{metadata}</metadata>
  <memory unit='MiB'>{memory_mib}</memory>{backing}
  <vcpu placement='static'{cpuset}>{vcpus}</vcpu>{iothreads}{numatune}
  <os><type arch='x86_64' machine='{machine}'>hvm</type>{boot}</os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>{usb}<memballoon model='none'/></devices>
</domain>
"
    )
}

/// The tids of threads `CPU 0/KVM` .. `CPU n-1/KVM` of `pid`, once all `vcpus` exist.
fn vcpu_threads(pid: u32, vcpus: usize) -> Option<Vec<u32>> {
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
