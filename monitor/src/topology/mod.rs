//! Host topology (sockets, NUMA nodes, CPUs, SMT siblings, PCI devices) read from sysfs.
//!
//! Everything is read below a root directory (`/sys` on a host, a fixture tree in tests), so a
//! two-socket GPU host can be described on a machine that has neither.

mod cpus;
mod moves;
mod pci;
mod sysfs;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::cpuset::CpuSet;

pub use pci::{mdev_parent, normalize_pci_address};

/// Why the topology could not be read; every variant names the file or directory at fault.
#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    /// A file or directory that must exist could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// A file's content is malformed.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong with its content.
        reason: String,
    },
    /// Files that are each well formed contradict each other.
    #[error("{}: {reason}", path.display())]
    Inconsistent {
        /// The file that contradicts the others.
        path: PathBuf,
        /// The contradiction.
        reason: String,
    },
}

/// The host as sysfs describes it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    /// Online CPUs by id.
    pub cpus: BTreeMap<u32, Cpu>,
    /// NUMA nodes by id, including memory-only nodes (empty `cpus`).
    pub nodes: BTreeMap<u32, Node>,
    /// PCI devices by normalised address ("0000:3b:00.0").
    pub pci: BTreeMap<String, PciDevice>,
    /// Possible CPUs that are not online (they have no topology).
    pub offline_cpus: CpuSet,
    /// CPUs the kernel can ever bring online.
    pub possible_cpus: CpuSet,
    /// Oddities that did not stop the read (a PCI device without a node, ...), for the caller
    /// to log; each names the path and the problem.
    pub warnings: Vec<String>,
}

/// One online CPU and where it sits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Cpu {
    /// Logical CPU id (the N of cpuN).
    pub id: u32,
    /// Physical package (socket) id.
    pub socket: u32,
    /// NUMA node id.
    pub node: u32,
    /// Core id within the socket (SMT threads of one core share it).
    pub core: u32,
    /// SMT siblings, this CPU included.
    pub siblings: CpuSet,
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Node {
    /// Node id (the N of nodeN).
    pub id: u32,
    /// Its online CPUs; empty for memory-only nodes (CXL, HBM).
    pub cpus: CpuSet,
    /// The socket of its CPUs; `None` for a memory-only node, or when a kernel without NUMA
    /// puts several sockets in its single node.
    pub socket: Option<u32>,
}

/// One PCI device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PciDevice {
    /// Normalised address ("0000:3b:00.0").
    pub address: String,
    /// NUMA node; `None` when sysfs does not tell (see `Topology::warnings`).
    pub node: Option<u32>,
    /// Class code, e.g. 0x030200 for a 3D controller.
    pub class: Option<u32>,
    /// PCI vendor id.
    pub vendor: Option<u16>,
    /// PCI device id.
    pub device: Option<u16>,
}

impl PciDevice {
    /// Whether the class says GPU or accelerator (see `Topology::is_gpu_class`).
    pub fn is_gpu(&self) -> bool {
        self.class.is_some_and(Topology::is_gpu_class)
    }
}

/// Where a CPU sits relative to a VM's GPUs.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Locality {
    /// On one of the GPUs' NUMA nodes.
    Local,
    /// On another node of a GPU's socket (SNC / NPS hosts).
    SameSocket,
    /// On a socket that holds none of the GPUs.
    Remote,
    /// Not decidable: the VM has no GPU, or the CPU or GPU nodes are unknown to the topology.
    None,
}

/// The locality of each CPU for one VM's GPU nodes ([`Topology::localities`]).
#[derive(Debug, Clone)]
pub struct CpuLocalities {
    /// By CPU id, for ids below [`CpuLocalities::DENSE`].
    by_cpu: Vec<Locality>,
    /// Ids beyond it (none on a real host: x86's NR_CPUS is at most 8192; an odd sysfs tree
    /// may name any number, which must not size a vector).
    beyond: BTreeMap<u32, Locality>,
}

impl CpuLocalities {
    const DENSE: u32 = 8192;

    /// The locality of `cpu`: [`Locality::None`] for a CPU the topology does not know.
    pub fn of(&self, cpu: u32) -> Locality {
        match self.by_cpu.get(cpu as usize) {
            Some(&locality) => locality,
            None => self.beyond.get(&cpu).copied().unwrap_or(Locality::None),
        }
    }
}

impl Locality {
    /// Every locality, in label order.
    pub const ALL: [Locality; 4] = [
        Locality::Local,
        Locality::SameSocket,
        Locality::Remote,
        Locality::None,
    ];

    /// The Prometheus label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Locality::Local => "local",
            Locality::SameSocket => "same_socket",
            Locality::Remote => "remote",
            Locality::None => "none",
        }
    }
}

impl std::fmt::Display for Locality {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Paths below the sysfs root.
const CPU_DIR: &str = "devices/system/cpu";

impl Topology {
    /// Reads the topology below `sysfs_root` (`/sys` on a host).
    pub fn read(sysfs_root: &Path) -> Result<Topology, TopologyError> {
        let cpu_dir = sysfs_root.join(CPU_DIR);
        let online_path = cpu_dir.join("online");
        let online = sysfs::read_cpuset(&online_path)?;
        if online.is_empty() {
            return Err(TopologyError::Parse {
                path: online_path,
                reason: "no CPU is online".to_string(),
            });
        }
        let mut warnings = Vec::new();
        let possible_path = cpu_dir.join("possible");
        let possible_cpus = match sysfs::read_optional(&possible_path)? {
            Some(text) => sysfs::parse_cpuset(&possible_path, &text)?,
            None => {
                warnings.push(format!(
                    "{}: missing; taking the online CPUs as the possible ones",
                    possible_path.display()
                ));
                online.clone()
            }
        };
        if !online.is_subset(&possible_cpus) {
            return Err(TopologyError::Inconsistent {
                path: online_path,
                reason: format!(
                    "online CPUs {online} are not all among the possible CPUs {possible_cpus}"
                ),
            });
        }
        let cpus::CpusAndNodes { cpus, nodes } =
            cpus::read_cpus_and_nodes(sysfs_root, &online, &mut warnings)?;
        let pci = pci::read_pci(sysfs_root, &cpus, &nodes, &mut warnings);
        Ok(Topology {
            cpus,
            nodes,
            pci,
            offline_cpus: possible_cpus.difference(&online),
            possible_cpus,
            warnings,
        })
    }

    /// Socket id -> its online CPUs.
    pub fn sockets(&self) -> BTreeMap<u32, CpuSet> {
        let mut sockets: BTreeMap<u32, CpuSet> = BTreeMap::new();
        for cpu in self.cpus.values() {
            sockets.entry(cpu.socket).or_default().insert(cpu.id);
        }
        sockets
    }

    /// Union of the CPUs of `nodes` (unknown nodes add nothing).
    pub fn node_cpus(&self, nodes: &[u32]) -> CpuSet {
        nodes
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .flat_map(|node| node.cpus.iter())
            .collect()
    }

    /// The socket of `node`; `None` for unknown or memory-only nodes.
    pub fn socket_of_node(&self, node: u32) -> Option<u32> {
        self.nodes.get(&node).and_then(|n| n.socket)
    }

    /// NUMA node of the PCI device at `address` (any form `normalize_pci_address` accepts).
    pub fn pci_node(&self, address: &str) -> Option<u32> {
        let address = normalize_pci_address(address)?;
        self.pci.get(&address).and_then(|dev| dev.node)
    }

    /// Locality of running on `cpu` for a VM whose GPUs sit on `gpu_nodes`: Local if the CPU's
    /// node is one of them, SameSocket if its socket holds one of them, Remote otherwise.
    ///
    /// Returns `Locality::None` when `gpu_nodes` is empty, when none of `gpu_nodes` is a node
    /// of this topology, or when `cpu` is not an online CPU of it (e.g. a fixture smaller than
    /// the host): the topology cannot tell, and guessing Remote would raise false alarms, so
    /// the caller decides what an unknown placement means.
    pub fn locality(&self, cpu: u32, gpu_nodes: &[u32]) -> Locality {
        let Some(cpu) = self.cpus.get(&cpu) else {
            return Locality::None;
        };
        if !gpu_nodes.iter().any(|id| self.nodes.contains_key(id)) {
            return Locality::None;
        }
        if gpu_nodes.contains(&cpu.node) {
            Locality::Local
        } else if gpu_nodes
            .iter()
            .any(|&n| self.socket_of_node(n) == Some(cpu.socket))
        {
            Locality::SameSocket
        } else {
            Locality::Remote
        }
    }

    /// [`Topology::locality`] of every online CPU for one set of GPU nodes, worked out once:
    /// what a hot loop over many (thread, CPU) pairs of one VM looks up instead.
    pub fn localities(&self, gpu_nodes: &[u32]) -> CpuLocalities {
        let dense = self.cpus.range(..CpuLocalities::DENSE);
        let len = dense
            .clone()
            .next_back()
            .map_or(0, |(&cpu, _)| cpu as usize + 1);
        let mut by_cpu = vec![Locality::None; len];
        for (&cpu, _) in dense {
            by_cpu[cpu as usize] = self.locality(cpu, gpu_nodes);
        }
        let beyond = self
            .cpus
            .range(CpuLocalities::DENSE..)
            .map(|(&cpu, _)| (cpu, self.locality(cpu, gpu_nodes)))
            .collect();
        CpuLocalities { by_cpu, beyond }
    }

    /// Online CPUs on sockets that hold none of `gpu_nodes` (empty without GPU nodes).
    pub fn far_cpus(&self, gpu_nodes: &[u32]) -> CpuSet {
        self.cpus
            .keys()
            .copied()
            .filter(|&cpu| self.locality(cpu, gpu_nodes) == Locality::Remote)
            .collect()
    }

    /// Whether a thread allowed on `allowed` may run on a socket without any of `gpu_nodes`.
    pub fn allows_far_socket(&self, allowed: &CpuSet, gpu_nodes: &[u32]) -> bool {
        allowed
            .iter()
            .any(|cpu| self.locality(cpu, gpu_nodes) == Locality::Remote)
    }

    /// Whether a PCI class code is a GPU: base class 0x03 (display / 3D controller) or 0x12
    /// (processing accelerator).
    pub fn is_gpu_class(class: u32) -> bool {
        matches!((class >> 16) & 0xff, 0x03 | 0x12)
    }

    /// PCI devices whose class says GPU or accelerator.
    pub fn gpus(&self) -> impl Iterator<Item = &PciDevice> + '_ {
        self.pci.values().filter(|dev| dev.is_gpu())
    }
}
