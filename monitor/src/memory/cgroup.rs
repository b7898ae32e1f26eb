//! A process's memory cgroup: its stat files found once from /proc/PID/cgroup (v1, v2 and
//! hybrid hosts), held open and read again from their start, and `memory.numa_stat` parsed
//! (v1 counts pages, v2 bytes).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::cgroupfs::{controller_cgroup, ControllerCgroup};

use super::{hugetlb, node_field, read_file, BytesByNode, MemoryError, MemorySource, Resident};

/// Most a memory stat file may hold (v1's memory.numa_stat is ~1 KiB on a 2-node host).
pub(super) const MAX_STAT_FILE_BYTES: usize = 1 << 20;

/// A kernel stat file held open and read again from its start each time. The kernel writes
/// such a file anew for a read at offset 0, so the figures are fresh, while the path (some
/// ten directories deep under /sys/fs/cgroup) is walked only once: opening and closing a
/// VM's three stat files each tick cost more than reading them (BENCHMARKS.md). A cgroup
/// removed meanwhile fails the read (kernfs answers ENODEV), and the caller finds the files
/// anew; so does a file of a fixture tree that was deleted (no links left), which a plain
/// file system would still let us read.
#[derive(Debug)]
pub(super) struct StatFile {
    pub(super) path: PathBuf,
    file: File,
}

impl StatFile {
    pub(super) fn open(path: PathBuf) -> Result<StatFile, MemoryError> {
        match File::open(&path) {
            Ok(file) => Ok(StatFile { path, file }),
            Err(source) => Err(MemoryError::Read { path, source }),
        }
    }

    /// The whole file as the kernel writes it now.
    pub(super) fn read(&self) -> Result<String, MemoryError> {
        let failed = |source| MemoryError::Read {
            path: self.path.clone(),
            source,
        };
        if std::os::unix::fs::MetadataExt::nlink(&self.file.metadata().map_err(failed)?) == 0 {
            let gone = std::io::Error::new(std::io::ErrorKind::NotFound, "removed");
            return Err(failed(gone));
        }
        let mut bytes = vec![0; 4096];
        let mut len = 0;
        loop {
            if len == bytes.len() {
                // A stat file is a few lines per node; one that grows without end is not one.
                if len >= MAX_STAT_FILE_BYTES {
                    return Err(MemoryError::Format {
                        path: self.path.clone(),
                        reason: format!("longer than {MAX_STAT_FILE_BYTES} bytes"),
                    });
                }
                bytes.resize(2 * len, 0);
            }
            match self.file.read_at(&mut bytes[len..], len as u64) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failed(e)),
            }
        }
        bytes.truncate(len);
        String::from_utf8(bytes).map_err(|_| MemoryError::Format {
            path: self.path.clone(),
            reason: "not UTF-8 text".into(),
        })
    }
}

/// The stat files of one process's cgroups: found and opened once from /proc/PID/cgroup (a
/// QEMU process stays in its VM's cgroup for its life), then read again at each reading.
#[derive(Debug)]
pub(super) struct CgroupFiles {
    /// memory.numa_stat, and whether it is v1's format.
    numa_stat: StatFile,
    v1: bool,
    /// hugetlb.<size>.numa_stat of each page size (none without the controller).
    hugetlb: Vec<StatFile>,
    /// /proc/PID/status when `hugetlb` is empty: how many hugetlb pages no cgroup counts.
    status: Option<StatFile>,
}

impl CgroupFiles {
    pub(super) fn find(
        proc_root: &Path,
        cgroup_root: &Path,
        pid: u32,
    ) -> Result<CgroupFiles, MemoryError> {
        let cgroup_file = proc_root.join(pid.to_string()).join("cgroup");
        let text = read_file(&cgroup_file)?;
        let (v1, numa_stat) =
            memory_cgroup_file(&text, cgroup_root).ok_or_else(|| MemoryError::NoCgroup {
                path: cgroup_file.clone(),
            })?;
        let hugetlb: Vec<StatFile> = hugetlb::files(&text, cgroup_root)
            .into_iter()
            .map(StatFile::open)
            .collect::<Result<_, _>>()?;
        // No hugetlb cgroup of its own (the controller is not mounted, or, on a hybrid host,
        // sits on the v2 tree where libvirt does not enable it): the hugetlb pages are then
        // in no counter read here, so their total is read from the process itself.
        let status = if hugetlb.is_empty() {
            Some(StatFile::open(
                proc_root.join(pid.to_string()).join("status"),
            )?)
        } else {
            None
        };
        Ok(CgroupFiles {
            numa_stat: StatFile::open(numa_stat)?,
            v1,
            hugetlb,
            status,
        })
    }

    pub(super) fn read(&self) -> Result<Resident, MemoryError> {
        let stat = self.numa_stat.read()?;
        let parsed = if self.v1 {
            parse_v1(&stat)
        } else {
            parse_v2(&stat)
        };
        let mut by_node = parsed.map_err(|reason| MemoryError::Format {
            path: self.numa_stat.path.clone(),
            reason,
        })?;
        let hugetlb_by_node = hugetlb::read(&self.hugetlb)?;
        for (node, bytes) in &hugetlb_by_node {
            *by_node.entry(*node).or_default() += bytes;
        }
        let hugetlb_node_unknown = match &self.status {
            Some(status) => {
                hugetlb::status_bytes(&status.read()?).map_err(|reason| MemoryError::Format {
                    path: status.path.clone(),
                    reason,
                })?
            }
            None => 0,
        };
        Ok(Resident {
            by_node,
            hugetlb_by_node,
            hugetlb_node_unknown,
            source: MemorySource::Cgroup,
        })
    }
}

/// The memory cgroup's memory.numa_stat of a /proc/PID/cgroup text, and whether it is v1's.
fn memory_cgroup_file(text: &str, cgroup_root: &Path) -> Option<(bool, PathBuf)> {
    let (v1, relative) = memory_cgroup(text)?;
    // libvirt puts QEMU's own threads in an `emulator` child on v2 (and for cpu/cpuset on
    // v1); the VM's memory is accounted at the domain's level above it.
    let relative = relative.strip_suffix("/emulator").unwrap_or(relative);
    let dir = if v1 {
        cgroup_root.join("memory")
    } else {
        cgroup_root.to_path_buf()
    };
    let path = dir
        .join(relative.trim_start_matches('/'))
        .join("memory.numa_stat");
    Some((v1, path))
}

/// The memory cgroup of a /proc/PID/cgroup text: (is v1, path).
fn memory_cgroup(text: &str) -> Option<(bool, &str)> {
    match controller_cgroup(text, "memory")? {
        ControllerCgroup::V1(path) => Some((true, path)),
        ControllerCgroup::V2(path) => Some((false, path)),
    }
}

/// The page size the v1 counts are in.
pub(super) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it returns -1 for an unknown name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096)
}

/// v1: `hierarchical_total=P N0=P N1=P` (pages); `total=` when there is no hierarchical line.
fn parse_v1(text: &str) -> Result<BytesByNode, String> {
    let line = total_line(text)?;
    let page = page_size();
    let mut nodes = BytesByNode::new();
    for field in line.split_whitespace().skip(1) {
        let (node, pages) = node_field(field, '=')?;
        nodes.insert(node, pages.saturating_mul(page));
    }
    Ok(nodes)
}

/// The `hierarchical_total=` line of a v1-style numa_stat (the cgroup and its children), else
/// its `total=` line.
pub(super) fn total_line(text: &str) -> Result<&str, String> {
    let line = |key: &str| {
        text.lines()
            .find(|l| l.split_once('=').is_some_and(|(k, _)| k == key))
    };
    line("hierarchical_total")
        .or_else(|| line("total"))
        .ok_or_else(|| "no total= line".to_string())
}

/// v2: `anon N0=B N1=B`, `file ...`, `unevictable ...` (bytes), summed per node.
fn parse_v2(text: &str) -> Result<BytesByNode, String> {
    let mut nodes = BytesByNode::new();
    let mut seen = false;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some(key) = fields.next() else { continue };
        if !matches!(key, "anon" | "file" | "unevictable") {
            continue;
        }
        seen = true;
        for field in fields {
            let (node, bytes) = node_field(field, '=')?;
            *nodes.entry(node).or_default() += bytes;
        }
    }
    if seen {
        Ok(nodes)
    } else {
        Err("no anon, file or unevictable line".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::read;
    use std::collections::BTreeMap;

    const V1: &str = "total=3948 N0=3000 N1=948\nfile=0 N0=0 N1=0\nanon=3948 N0=3000 N1=948\n\
        unevictable=0 N0=0 N1=0\nhierarchical_total=4000 N0=3052 N1=948\n";

    #[test]
    fn v1_pages_by_node_hierarchical_first() {
        let page = page_size();
        let nodes = parse_v1(V1).unwrap();
        assert_eq!(nodes, BTreeMap::from([(0, 3052 * page), (1, 948 * page)]));
        let flat = parse_v1("total=10 N0=10\n").unwrap();
        assert_eq!(flat, BTreeMap::from([(0, 10 * page)]));
    }

    #[test]
    fn v2_bytes_summed_over_anon_file_unevictable() {
        let text = "anon N0=4096 N1=8192\nfile N0=100 N1=0\nkernel_stack N0=5 N1=5\n\
            unevictable N0=0 N1=1\nshmem N0=7 N1=7\n";
        let nodes = parse_v2(text).unwrap();
        assert_eq!(nodes, BTreeMap::from([(0, 4196), (1, 8193)]));
    }

    #[test]
    fn unknown_lines_are_ignored_and_bad_ones_named() {
        assert!(parse_v1("total=1 N0=1\nsomething_new=5 N0=5\n").is_ok());
        assert!(parse_v1("anon=1 N0=1\n").unwrap_err().contains("no total"));
        assert!(parse_v1("total=1 N0=x\n").unwrap_err().contains("\"N0=x\""));
        assert!(parse_v2("").unwrap_err().contains("no anon"));
        assert!(parse_v2("anon M0=1\n").unwrap_err().contains("\"M0=1\""));
    }

    #[test]
    fn finds_the_memory_cgroup_on_v1_v2_and_hybrid_hosts() {
        let v1 = "4:memory:/machine/qemu-1-vm.libvirt-qemu\n0::/machine/qemu-1-vm.libvirt-qemu/emulator\n";
        assert_eq!(
            memory_cgroup(v1),
            Some((true, "/machine/qemu-1-vm.libvirt-qemu"))
        );
        let v2 = "0::/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator\n";
        assert_eq!(
            memory_cgroup(v2),
            Some((
                false,
                "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope/libvirt/emulator"
            ))
        );
        assert_eq!(memory_cgroup("1:cpu:/\n"), None);
    }

    #[test]
    fn reads_a_tree_and_names_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let (proc_root, cg) = (dir.path().join("proc"), dir.path().join("cgroup"));
        std::fs::create_dir_all(proc_root.join("42")).unwrap();
        std::fs::write(proc_root.join("42/cgroup"), "4:memory:/machine/vm\n").unwrap();
        std::fs::write(proc_root.join("42/status"), "HugetlbPages:\t       0 kB\n").unwrap();
        let err = read(&proc_root, &cg, 42).unwrap_err().to_string();
        assert!(err.contains("memory/machine/vm/memory.numa_stat"), "{err}");
        std::fs::create_dir_all(cg.join("memory/machine/vm")).unwrap();
        std::fs::write(cg.join("memory/machine/vm/memory.numa_stat"), V1).unwrap();
        assert_eq!(
            read(&proc_root, &cg, 42).unwrap().by_node[&1],
            948 * page_size()
        );
        // A VM that stopped: its /proc entry is gone.
        assert!(matches!(
            read(&proc_root, &cg, 43),
            Err(MemoryError::Read { .. })
        ));
    }
}
