//! Online CPUs (socket, core, SMT siblings) and NUMA nodes from devices/system/{cpu,node}.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{sysfs, Cpu, Node, TopologyError, CPU_DIR};
use crate::cpuset::CpuSet;

const NODE_DIR: &str = "devices/system/node";

/// Where one online CPU sits, before its node is known.
struct Place {
    socket: u32,
    core: u32,
    siblings: CpuSet,
}

/// Node id -> online CPUs, and whether the nodes came from sysfs or were made up because the
/// kernel has no NUMA support.
struct NodeCpus {
    cpus: BTreeMap<u32, CpuSet>,
    synthesized: bool,
}

/// Online CPUs and NUMA nodes, by id.
pub(super) struct CpusAndNodes {
    pub(super) cpus: BTreeMap<u32, Cpu>,
    pub(super) nodes: BTreeMap<u32, Node>,
}

/// Reads every online CPU and every NUMA node, and checks that they agree.
pub(super) fn read_cpus_and_nodes(
    root: &Path,
    online: &CpuSet,
    warnings: &mut Vec<String>,
) -> Result<CpusAndNodes, TopologyError> {
    let places = read_places(root, online, warnings)?;
    let node_cpus = read_node_cpus(root, online, warnings)?;

    let mut node_of: BTreeMap<u32, u32> = BTreeMap::new();
    for (&node, cpus) in &node_cpus.cpus {
        for cpu in cpus.iter() {
            if let Some(other) = node_of.insert(cpu, node) {
                return Err(TopologyError::Inconsistent {
                    path: cpulist_path(root, node),
                    reason: format!("CPU {cpu} is also in node {other}"),
                });
            }
        }
    }

    let mut cpus = BTreeMap::new();
    for (id, place) in places {
        let node = *node_of
            .get(&id)
            .ok_or_else(|| TopologyError::Inconsistent {
                path: root.join(NODE_DIR),
                reason: format!("online CPU {id} is in no node's cpulist"),
            })?;
        let cpu = Cpu {
            id,
            socket: place.socket,
            node,
            core: place.core,
            siblings: place.siblings,
        };
        cpus.insert(id, cpu);
    }

    let mut nodes = BTreeMap::new();
    for (id, node_cpus_set) in node_cpus.cpus {
        // Every CPU of the set is online and so has an entry in `cpus` (checked above).
        let sockets: BTreeSet<u32> = node_cpus_set
            .iter()
            .filter_map(|cpu| cpus.get(&cpu).map(|c| c.socket))
            .collect();
        let socket = match sockets.len() {
            0 | 1 => sockets.first().copied(),
            _ if node_cpus.synthesized => {
                warnings.push(format!(
                    "{}: missing (kernel without NUMA), but the CPUs span sockets {}; \
                     node 0 has no socket",
                    root.join(NODE_DIR).display(),
                    join(&sockets)
                ));
                None
            }
            _ => {
                return Err(TopologyError::Inconsistent {
                    path: cpulist_path(root, id),
                    reason: format!(
                        "CPUs {node_cpus_set} span sockets {}; a NUMA node lies within one socket",
                        join(&sockets)
                    ),
                })
            }
        };
        let node = Node {
            id,
            cpus: node_cpus_set,
            socket,
        };
        nodes.insert(id, node);
    }
    Ok(CpusAndNodes { cpus, nodes })
}

/// Socket, core and siblings of each online CPU; any unreadable file is an error because the
/// topology would be wrong without it.
fn read_places(
    root: &Path,
    online: &CpuSet,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<u32, Place>, TopologyError> {
    let mut places = BTreeMap::new();
    for cpu in online.iter() {
        let dir = root.join(CPU_DIR).join(format!("cpu{cpu}/topology"));
        let package_path = dir.join("physical_package_id");
        let package = sysfs::parse_i64(&package_path, &sysfs::read_trimmed(&package_path)?)?;
        let socket = match u32::try_from(package) {
            Ok(socket) => socket,
            // Some platforms (older arm64 firmware, some guests) do not know the package.
            Err(_) if package == -1 => {
                warnings.push(format!(
                    "{}: package unknown (-1); assuming socket 0",
                    package_path.display()
                ));
                0
            }
            Err(_) => {
                return Err(TopologyError::Parse {
                    path: package_path,
                    reason: format!("{package} is not a package id"),
                })
            }
        };
        let core = sysfs::read_u32(&dir.join("core_id"))?;
        let siblings_path = dir.join("thread_siblings_list");
        let siblings = sysfs::read_cpuset(&siblings_path)?;
        if !siblings.contains(cpu) {
            return Err(TopologyError::Inconsistent {
                path: siblings_path,
                reason: format!("CPU {cpu} is not among its own siblings {siblings}"),
            });
        }
        places.insert(
            cpu,
            Place {
                socket,
                core,
                siblings,
            },
        );
    }
    Ok(places)
}

/// Online CPUs of each NUMA node. Offline CPUs in a cpulist are left out (they have no
/// topology to place them). Without devices/system/node the kernel has no NUMA: one node 0.
fn read_node_cpus(
    root: &Path,
    online: &CpuSet,
    warnings: &mut Vec<String>,
) -> Result<NodeCpus, TopologyError> {
    let dir = root.join(NODE_DIR);
    let read_err = |source: io::Error| TopologyError::Read {
        path: dir.clone(),
        source,
    };
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %dir.display(), "no NUMA nodes in sysfs; one node 0");
            return Ok(single_node(online));
        }
        Err(e) => return Err(read_err(e)),
    };
    let mut cpus = BTreeMap::new();
    for entry in entries {
        let name = entry.map_err(read_err)?.file_name();
        let Some(id) = name.to_str().and_then(node_id) else {
            continue; // "online", "possible", "has_cpu", ... are not nodes
        };
        let node_cpus = sysfs::read_cpuset(&cpulist_path(root, id))?;
        cpus.insert(id, node_cpus.intersection(online));
    }
    if cpus.is_empty() {
        warnings.push(format!(
            "{}: holds no nodeN directory; taking one node 0",
            dir.display()
        ));
        return Ok(single_node(online));
    }
    Ok(NodeCpus {
        cpus,
        synthesized: false,
    })
}

/// The node id of a "nodeN" directory name.
fn node_id(name: &str) -> Option<u32> {
    let digits = name.strip_prefix("node")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn single_node(online: &CpuSet) -> NodeCpus {
    NodeCpus {
        cpus: BTreeMap::from([(0, online.clone())]),
        synthesized: true,
    }
}

fn cpulist_path(root: &Path, node: u32) -> PathBuf {
    root.join(NODE_DIR).join(format!("node{node}/cpulist"))
}

fn join(ids: &BTreeSet<u32>) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
