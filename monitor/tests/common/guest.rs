//! What a test VM is: its options, the guest it boots (the spin guest's ELF, built once per
//! process, or PXE with no disk) and the domain XML libvirt is given for them.

use super::repo_root;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

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
    /// Guest RAM from hugetlbfs (`<memoryBacking><hugepages/>`, 2 MiB pages the host must
    /// have reserved).
    pub hugepages: bool,
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
            hugepages: false,
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
pub(super) fn scratch_dir() -> PathBuf {
    let dir = PathBuf::from(format!("/tmp/pinsight-test-guest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

pub(super) fn path_str(path: &Path) -> &str {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
}

pub(super) fn domain_xml(
    name: &str,
    opts: &VmOptions,
    vcpus: usize,
    kernel: Option<&Path>,
) -> String {
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
    let hugepages = if opts.hugepages { "<hugepages/>" } else { "" };
    let (memory_mib, allocation) = match opts.preallocated_mib {
        Some(mib) => (mib, "<allocation mode='immediate'/>"),
        None => (128, ""),
    };
    let backing = match format!("{hugepages}{allocation}") {
        b if b.is_empty() => b,
        b => format!("<memoryBacking>{b}</memoryBacking>"),
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
