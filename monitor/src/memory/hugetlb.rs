//! Hugetlb pages of a VM by node: `hugetlb.<size>.numa_stat` of its hugetlb cgroup, from
//! kernel 5.17 on. v1 has `total=B N0=B ...` and `hierarchical_total=B N0=B ...`, v2 `total=`
//! only, in bytes. Guest RAM backed by hugetlbfs (`<memoryBacking><hugepages/>`) is here and
//! not in `memory.numa_stat`.

use std::path::{Path, PathBuf};

use crate::cgroupfs::{controller_cgroup, v2_root, ControllerCgroup};

use super::cgroup::{total_line, StatFile};
use super::{node_field, BytesByNode, MemoryError};

/// Where the hugetlb controller of a process sits: v1 `hugetlb` hierarchy, or v2.
fn hugetlb_dir(cgroup_text: &str, cgroup_root: &Path) -> Option<PathBuf> {
    let relative = |path: &str| {
        let path = path.strip_suffix("/emulator").unwrap_or(path);
        path.trim_start_matches('/').to_string()
    };
    Some(match controller_cgroup(cgroup_text, "hugetlb")? {
        ControllerCgroup::V1(path) => cgroup_root.join("hugetlb").join(relative(path)),
        ControllerCgroup::V2(path) => v2_root(cgroup_root).join(relative(path)),
    })
}

/// The hugetlb.<size>.numa_stat files of the process whose /proc/PID/cgroup is
/// `cgroup_text`, one per page size, in name order. A host without the controller there (or
/// a kernel without numa_stat) has none: that is no error, the VM just has no hugetlb figure.
pub fn files(cgroup_text: &str, cgroup_root: &Path) -> Vec<PathBuf> {
    let Some(dir) = hugetlb_dir(cgroup_text, cgroup_root) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("hugetlb.") && n.ends_with(".numa_stat"))
        })
        .collect();
    files.sort();
    files
}

/// The process's hugetlb bytes, whatever their node: `HugetlbPages:` of its /proc/PID/status
/// text (kB; kernel >= 4.4, 0 where the line is missing). For a VM whose hugetlb pages no
/// hugetlb cgroup counts, so that they are at least known to be there.
pub(super) fn status_bytes(status: &str) -> Result<u64, String> {
    let Some(value) = status
        .lines()
        .find_map(|line| line.strip_prefix("HugetlbPages:"))
    else {
        return Ok(0);
    };
    value
        .trim()
        .strip_suffix("kB")
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
        .ok_or_else(|| format!("HugetlbPages:{value} is not <number> kB"))
}

/// The hugetlb bytes by node in `files` (of [`files`], opened), summed over page sizes.
pub(super) fn read(files: &[StatFile]) -> Result<BytesByNode, MemoryError> {
    let mut nodes = BytesByNode::new();
    for file in files {
        let text = file.read()?;
        let per_size = parse(&text).map_err(|reason| MemoryError::Format {
            path: file.path.clone(),
            reason,
        })?;
        for (node, bytes) in per_size {
            *nodes.entry(node).or_default() += bytes;
        }
    }
    Ok(nodes)
}

/// `hierarchical_total=` (v1, the cgroup and its children) else `total=`, bytes by node.
fn parse(text: &str) -> Result<BytesByNode, String> {
    total_line(text)?
        .split_whitespace()
        .skip(1)
        .map(|field| node_field(field, '='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn hugetlb_pages_of_a_process_from_its_status() {
        let status = "Name:\tqemu-system-x86\nVmRSS:\t  10240 kB\nHugetlbPages:\t  1048576 kB\n";
        assert_eq!(status_bytes(status), Ok(1 << 30));
        // A kernel before 4.4 has no such line: none known.
        assert_eq!(status_bytes("Name:\tqemu\n"), Ok(0));
        let err = status_bytes("HugetlbPages:\t12 MB\n").unwrap_err();
        assert!(err.contains("12 MB"), "{err}");
    }

    /// The files of [`files`], opened, as the memory reader holds them.
    fn open(files: Vec<PathBuf>) -> Vec<StatFile> {
        files
            .into_iter()
            .map(|f| StatFile::open(f).unwrap())
            .collect()
    }

    #[test]
    fn v1_hierarchical_first_and_v2_total_in_bytes() {
        // The kernel's own examples (commit f47761999052, "hugetlb: add hugetlb.*.numa_stat").
        let v1 = "total=0 N0=0 N1=0\nhierarchical_total=2097152 N0=2097152 N1=0\n";
        assert_eq!(parse(v1).unwrap(), BTreeMap::from([(0, 2097152), (1, 0)]));
        let v2 = "total=4194304 N0=0 N1=4194304\n";
        assert_eq!(parse(v2).unwrap(), BTreeMap::from([(0, 0), (1, 4194304)]));
        assert!(parse("").unwrap_err().contains("no total"));
        assert!(parse("total=1 X0=1\n").unwrap_err().contains("\"X0=1\""));
    }

    #[test]
    fn reads_every_page_size_of_a_v1_or_hybrid_v2_tree_and_none_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let vm = root.join("hugetlb/machine/qemu-1-vm.libvirt-qemu");
        std::fs::create_dir_all(&vm).unwrap();
        std::fs::write(
            vm.join("hugetlb.2MB.numa_stat"),
            "total=2097152 N0=0 N1=2097152\n",
        )
        .unwrap();
        std::fs::write(
            vm.join("hugetlb.1GB.numa_stat"),
            "total=1073741824 N0=1073741824 N1=0\n",
        )
        .unwrap();
        std::fs::write(vm.join("hugetlb.2MB.usage_in_bytes"), "2097152\n").unwrap();
        let v1 = "5:hugetlb:/machine/qemu-1-vm.libvirt-qemu\n0::/\n";
        assert_eq!(
            read(&open(files(v1, root))).unwrap(),
            BTreeMap::from([(0, 1073741824), (1, 2097152)])
        );
        // Hybrid: no v1 hugetlb line, the controller is on v2 under `unified`.
        let v2 = root.join("unified/machine/vm/libvirt");
        std::fs::create_dir_all(&v2).unwrap();
        std::fs::write(
            v2.join("hugetlb.2MB.numa_stat"),
            "total=4194304 N0=4194304\n",
        )
        .unwrap();
        let hybrid = "4:memory:/machine/vm\n0::/machine/vm/libvirt/emulator\n";
        assert_eq!(
            read(&open(files(hybrid, root))).unwrap(),
            BTreeMap::from([(0, 4194304)])
        );
        // No controller (or no such cgroup): no hugetlb figure, no error.
        assert!(read(&open(files("4:memory:/x\n", root)))
            .unwrap()
            .is_empty());
        assert!(read(&open(files("0::/nowhere\n", root)))
            .unwrap()
            .is_empty());
        // An unknown line is ignored; a malformed file is named.
        std::fs::write(
            v2.join("hugetlb.2MB.numa_stat"),
            "something_new=1\ntotal=1 N0=x\n",
        )
        .unwrap();
        let err = read(&open(files(hybrid, root))).unwrap_err().to_string();
        assert!(
            err.contains("hugetlb.2MB.numa_stat") && err.contains("N0=x"),
            "{err}"
        );
    }
}
