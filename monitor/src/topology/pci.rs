//! PCI devices' NUMA nodes and classes (bus/pci/devices) and mdev parents (bus/mdev/devices).
//!
//! One odd device must not cost the whole topology: problems become warnings and a `None`.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

use super::{sysfs, Cpu, Node, PciDevice, TopologyError};
use crate::cpuset::CpuSet;

const PCI_DIR: &str = "bus/pci/devices";
const MDEV_DIR: &str = "bus/mdev/devices";

/// "0000:3B:00.0" / "3b:00.0" / "0:3b:0.0" -> "0000:3b:00.0"; `None` if not a PCI address.
pub fn normalize_pci_address(s: &str) -> Option<String> {
    let s = s.trim();
    let (domain, rest) = match s.bytes().filter(|&b| b == b':').count() {
        2 => s.split_once(':')?,
        1 => ("0", s),
        _ => return None,
    };
    let (bus, rest) = rest.split_once(':')?;
    let (slot, function) = rest.split_once('.')?;
    let hex = |text: &str, max_len: usize, max: u32| -> Option<u32> {
        if text.is_empty() || text.len() > max_len || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(text, 16).ok().filter(|&v| v <= max)
    };
    // Domains above 0xffff exist (Intel VMD uses 0x10000 and up), so allow eight digits.
    let domain = hex(domain, 8, u32::MAX)?;
    let bus = hex(bus, 2, 0xff)?;
    let slot = hex(slot, 2, 0x1f)?;
    let function = hex(function, 1, 7)?;
    Some(format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"))
}

/// PCI address of the device an mdev (vGPU) was created on: bus/mdev/devices/<UUID> links into
/// the parent's directory (".../0000:3b:00.0/<UUID>").
pub fn mdev_parent(sysfs_root: &Path, uuid: &str) -> Result<String, TopologyError> {
    let link = sysfs_root.join(MDEV_DIR).join(uuid.to_ascii_lowercase());
    if !is_uuid(uuid) {
        // Also keeps "../" and "/" out of the path built above.
        return Err(TopologyError::Parse {
            path: link,
            reason: format!("{uuid:?} is not an mdev UUID"),
        });
    }
    let target = fs::canonicalize(&link).map_err(|source| TopologyError::Read {
        path: link.clone(),
        source,
    })?;
    target
        .parent()
        .and_then(Path::file_name)
        .and_then(|name| name.to_str())
        .and_then(normalize_pci_address)
        .ok_or_else(|| TopologyError::Parse {
            reason: format!(
                "links to {}, whose parent directory is not a PCI device",
                target.display()
            ),
            path: link,
        })
}

/// 8-4-4-4-12 hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, len)| g.len() == len && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Every device under bus/pci/devices (entries are symlinks on hosts, directories in fixtures;
/// both are read through).
pub(super) fn read_pci(
    root: &Path,
    cpus: &BTreeMap<u32, Cpu>,
    nodes: &BTreeMap<u32, Node>,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, PciDevice> {
    let dir = root.join(PCI_DIR);
    let mut devices = BTreeMap::new();
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %dir.display(), "no PCI bus in sysfs");
            return devices;
        }
        Err(e) => {
            warnings.push(format!("{}: cannot list PCI devices: {e}", dir.display()));
            return devices;
        }
    };
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                warnings.push(format!("{}: cannot list PCI devices: {e}", dir.display()));
                continue;
            }
        };
        let path = entry.path();
        let Some(address) = entry.file_name().to_str().and_then(normalize_pci_address) else {
            warnings.push(format!("{}: not a PCI address; skipped", path.display()));
            continue;
        };
        let device = PciDevice {
            node: device_node(&path, cpus, nodes, warnings),
            class: attribute(&path, "class", warnings, sysfs::parse_hex),
            vendor: attribute(&path, "vendor", warnings, sysfs::parse_hex_u16),
            device: attribute(&path, "device", warnings, sysfs::parse_hex_u16),
            address: address.clone(),
        };
        devices.insert(address, device);
    }
    devices
}

/// An optional attribute file: missing is `None`; unreadable or malformed is `None` plus a
/// warning.
fn attribute<T>(
    dir: &Path,
    name: &str,
    warnings: &mut Vec<String>,
    parse: impl Fn(&Path, &str) -> Result<T, TopologyError>,
) -> Option<T> {
    let path = dir.join(name);
    let parsed = sysfs::read_optional(&path)
        .and_then(|text| text.map(|text| parse(&path, &text)).transpose());
    parsed.unwrap_or_else(|e| {
        warnings.push(e.to_string());
        None
    })
}

/// The device's node: numa_node when it names a node of this host, else the node of the CPUs
/// in local_cpulist (firmware without _PXM leaves numa_node at -1).
fn device_node(
    dir: &Path,
    cpus: &BTreeMap<u32, Cpu>,
    nodes: &BTreeMap<u32, Node>,
    warnings: &mut Vec<String>,
) -> Option<u32> {
    let numa_path = dir.join("numa_node");
    let declared = attribute(dir, "numa_node", warnings, sysfs::parse_i64);
    match declared {
        Some(n) if n >= 0 => {
            let known = u32::try_from(n).ok().filter(|n| nodes.contains_key(n));
            if known.is_some() {
                return known;
            }
            warnings.push(format!(
                "{}: node {n} is not a NUMA node of this host; trying local_cpulist",
                numa_path.display()
            ));
        }
        Some(_) | None => {} // -1 or missing: the kernel does not know; ask local_cpulist
    }

    let list_path = dir.join("local_cpulist");
    let local = match sysfs::read_optional(&list_path) {
        Ok(Some(text)) => match sysfs::parse_cpuset(&list_path, &text) {
            Ok(local) => local,
            Err(e) => {
                warnings.push(format!("{e}; NUMA node unknown"));
                return None;
            }
        },
        Ok(None) => {
            let numa = declared.map_or_else(|| "missing".to_string(), |n| n.to_string());
            warnings.push(format!(
                "{}: numa_node is {numa} and there is no local_cpulist; NUMA node unknown",
                dir.display()
            ));
            return None;
        }
        Err(e) => {
            warnings.push(format!("{e}; NUMA node unknown"));
            return None;
        }
    };
    node_of_cpus(&list_path, &local, cpus, warnings)
}

/// The node holding most of `local`'s online CPUs; `None` (with a warning) when no node holds
/// them or several hold equally many, as local_cpulist = every CPU does on a host whose
/// firmware does not place the device.
fn node_of_cpus(
    list_path: &Path,
    local: &CpuSet,
    cpus: &BTreeMap<u32, Cpu>,
    warnings: &mut Vec<String>,
) -> Option<u32> {
    let mut counts: BTreeMap<u32, usize> = BTreeMap::new();
    for cpu in local.iter().filter_map(|id| cpus.get(&id)) {
        *counts.entry(cpu.node).or_default() += 1;
    }
    let Some(most) = counts.values().copied().max() else {
        warnings.push(format!(
            "{}: \"{local}\" holds no online CPU; NUMA node unknown",
            list_path.display()
        ));
        return None;
    };
    let top: Vec<u32> = counts
        .iter()
        .filter(|&(_, &n)| n == most)
        .map(|(&node, _)| node)
        .collect();
    match top.as_slice() {
        [node] => {
            if counts.len() > 1 {
                tracing::debug!(
                    path = %list_path.display(),
                    cpus = %local,
                    node,
                    "local_cpulist spans several nodes; taking the one holding most of its CPUs"
                );
            }
            Some(*node)
        }
        _ => {
            warnings.push(format!(
                "{}: CPUs {local} are spread evenly over nodes {}; NUMA node unknown",
                list_path.display(),
                top.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            None
        }
    }
}
