//! What runs on the host: libvirt domains, their QEMU process and vCPU threads, their GPUs.
//!
//! One scan gives an [`Inventory`]. A domain that vanishes mid-scan, has unreadable XML or an
//! odd /proc is reported in [`Inventory::problems`] and the scan goes on with the others; only
//! an unreachable libvirtd fails the scan as a whole.

pub mod domain_xml;
mod libvirt;
pub mod qmp;
mod threads;
pub mod worker;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::topology::Topology;
pub use domain_xml::{DomainSpec, GpuRef};
pub use libvirt::{Access, Libvirt, LibvirtError};
pub use qmp::Vmm;
/// The CPUs a thread may run on now (`sched_getaffinity`), `None` when it is gone.
pub use threads::affinity as thread_affinity;
pub use threads::{HostThread, ThreadRole, ThreadsError};

/// How pinsight knows of a VM's GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuSource {
    /// A `<hostdev type='pci'>` of the domain.
    Hostdev,
    /// The parent device of a `<hostdev type='mdev'>` (a vGPU slice).
    Mdev,
    /// Declared by the operator in the `urn:pinsight:domain:1` metadata.
    Declared,
}

/// A GPU of a VM and where it sits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gpu {
    /// PCI address of the device (the parent device for an mdev).
    pub address: String,
    /// NUMA node of the device, if the topology knows it.
    pub node: Option<u32>,
    /// How we know of it.
    pub source: GpuSource,
}

impl std::fmt::Display for Gpu {
    /// "0000:3b:00.0@node1", or "@node?" when the node is unknown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.node {
            Some(n) => write!(f, "{}@node{n}", self.address),
            None => write!(f, "{}@node?", self.address),
        }
    }
}

/// One vCPU thread of a VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VcpuThread {
    /// vCPU index in the guest.
    pub vcpu: u32,
    /// Host thread id.
    pub tid: u32,
    /// CPUs the thread may run on now (its affinity).
    pub allowed_cpus: CpuSet,
    /// When the thread started (clock ticks after boot, /proc/.../stat field 22): a tid the
    /// kernel reuses for a new thread has another start time. 0 when unreadable.
    #[serde(skip)]
    pub start_time: u64,
}

/// A running VM as pinsight sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vm {
    /// libvirt domain name.
    pub name: String,
    /// Domain UUID.
    pub uuid: String,
    /// QEMU process id.
    pub pid: u32,
    /// vCPU threads, by vCPU index.
    pub vcpus: Vec<VcpuThread>,
    /// The QEMU process's other threads (emulator, IOThreads, the rest), by tid.
    pub threads: Vec<HostThread>,
    /// GPUs with their nodes.
    pub gpus: Vec<Gpu>,
    /// Distinct NUMA nodes of the GPUs that have one, ascending.
    pub gpu_nodes: Vec<u32>,
    /// Everything read from the domain XML.
    pub spec: DomainSpec,
    /// Which VMM runs it (libvirt, or QEMU found through its QMP socket).
    pub vmm: Vmm,
}

/// The running VMs, plus what could not be read and why.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inventory {
    /// VMs, sorted by name.
    pub vms: Vec<Vm>,
    /// One line per domain or device that could not be read fully.
    pub problems: Vec<String>,
}

impl Inventory {
    /// Re-reads every vCPU thread's allowed CPUs (one syscall per thread), so a pin changed
    /// behind libvirt's back (taskset, cgroups) is seen at the next tick rather than at the
    /// next rescan. A thread that is gone keeps its last known set until the rescan.
    pub fn refresh_affinity(&mut self) {
        for t in self.vms.iter_mut().flat_map(|vm| vm.vcpus.iter_mut()) {
            if let Some(cpus) = threads::affinity(t.tid) {
                t.allowed_cpus = cpus;
            }
        }
    }
}

/// Where to find the host's view of QEMU processes.
#[derive(Debug, Clone)]
pub struct HostPaths {
    /// sysfs root (a fixture in tests).
    pub sysfs_root: PathBuf,
    /// libvirt's QEMU state directory with NAME.pid files.
    pub qemu_run_dir: PathBuf,
    /// procfs root.
    pub proc_root: PathBuf,
}

impl HostPaths {
    /// The paths a configuration names (sysfs root, libvirt's QEMU state), /proc as is.
    pub fn of(config: &crate::config::Config) -> HostPaths {
        HostPaths {
            sysfs_root: config.sysfs_root.clone(),
            qemu_run_dir: config.qemu_run_dir.clone(),
            ..HostPaths::default()
        }
    }
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            sysfs_root: PathBuf::from("/sys"),
            qemu_run_dir: PathBuf::from("/run/libvirt/qemu"),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// A running domain whose QEMU process cannot be read; names the domain and the file.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// libvirt's pid file for the domain cannot be read.
    #[error("domain {domain}: cannot read QEMU pid file {}: {source}", path.display())]
    PidFile {
        /// Domain name.
        domain: String,
        /// The pid file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The pid file does not hold a pid.
    #[error("domain {domain}: {}: {text:?} is not a pid", path.display())]
    BadPid {
        /// Domain name.
        domain: String,
        /// The pid file.
        path: PathBuf,
        /// What it holds.
        text: String,
    },
    /// The QEMU process's threads cannot be read (it exited mid-scan, say).
    #[error("domain {domain}: {source}")]
    Threads {
        /// Domain name.
        domain: String,
        /// What could not be read.
        source: ThreadsError,
    },
}

/// Builds a [`Vm`] from a domain's XML and the host's /proc; errors name the domain.
pub fn build_vm(
    spec: DomainSpec,
    topology: &Topology,
    paths: &HostPaths,
    problems: &mut Vec<String>,
) -> Result<Vm, VmError> {
    let pid_file = paths.qemu_run_dir.join(format!("{}.pid", spec.name));
    let pid = read_pid(&spec.name, &pid_file)?;
    let (vcpus, host_threads) =
        threads::all_threads(&paths.proc_root, pid).map_err(|source| VmError::Threads {
            domain: spec.name.clone(),
            source,
        })?;
    let gpus = resolve_gpus(&spec, topology, &paths.sysfs_root, problems);
    let mut gpu_nodes: Vec<u32> = gpus.iter().filter_map(|g| g.node).collect();
    gpu_nodes.sort_unstable();
    gpu_nodes.dedup();
    for warning in &spec.warnings {
        problems.push(warning.clone());
    }
    Ok(Vm {
        name: spec.name.clone(),
        uuid: spec.uuid.clone(),
        pid,
        vcpus,
        threads: host_threads,
        gpus,
        gpu_nodes,
        spec,
        vmm: Vmm::Libvirt,
    })
}

fn read_pid(domain: &str, path: &Path) -> Result<u32, VmError> {
    let text = std::fs::read_to_string(path).map_err(|source| VmError::PidFile {
        domain: domain.into(),
        path: path.into(),
        source,
    })?;
    text.trim().parse().map_err(|_| VmError::BadPid {
        domain: domain.into(),
        path: path.into(),
        text: text.trim().into(),
    })
}

/// Turns the domain's GPU references into devices with nodes. PCI hostdevs that sysfs knows
/// and that are not GPUs (a NIC VF, say) are left out; declared GPUs always count.
fn resolve_gpus(
    spec: &DomainSpec,
    topology: &Topology,
    sysfs_root: &Path,
    problems: &mut Vec<String>,
) -> Vec<Gpu> {
    let mut gpus = Vec::new();
    for gpu in &spec.gpus {
        let (address, source) = match gpu {
            GpuRef::Pci { address } => {
                let class = topology.pci.get(address).and_then(|d| d.class);
                if class.is_some_and(|c| !Topology::is_gpu_class(c)) {
                    continue;
                }
                (address.clone(), GpuSource::Hostdev)
            }
            GpuRef::Mdev { uuid } => match crate::topology::mdev_parent(sysfs_root, uuid) {
                Ok(parent) => (parent, GpuSource::Mdev),
                Err(e) => {
                    problems.push(format!("domain {}: mdev {uuid}: {e}", spec.name));
                    continue;
                }
            },
            GpuRef::Declared { address } => (address.clone(), GpuSource::Declared),
        };
        let node = topology.pci_node(&address);
        if node.is_none() {
            problems.push(format!(
                "domain {}: GPU {address} has no known NUMA node in {}",
                spec.name,
                sysfs_root.display()
            ));
        }
        if !gpus.iter().any(|g: &Gpu| g.address == address) {
            gpus.push(Gpu {
                address,
                node,
                source,
            });
        }
    }
    gpus
}
