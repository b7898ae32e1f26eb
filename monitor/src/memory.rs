//! Where a VM's memory sits: the bytes its memory cgroup has on each NUMA node, from
//! `memory.numa_stat` (cgroup v1, where libvirt puts a VM in
//! `memory:/machine/qemu-N-NAME.libvirt-qemu`, and v2), plus its hugetlb pages by node
//! ([`hugetlb`]). A few small reads per VM every `placement_read_seconds` (the stat files,
//! found and opened once per QEMU process from /proc/PID/cgroup, then read again from their
//! start), never a page-table walk; [`numa_maps`] is the slow fallback for a VM without them.
//!
//! What is counted: the cgroup's `total` (v1: anon, file and unevictable pages) or the sum of
//! v2's `anon`, `file` and `unevictable` bytes, hierarchical where the kernel offers it. Guest
//! RAM is anonymous memory of the QEMU process (or file pages for memfd backing), charged to
//! this cgroup when the guest first touches it; hugetlbfs-backed guest RAM is charged to the
//! hugetlb controller instead (`hugetlb.<size>.numa_stat`, kernel >= 5.17).
//!
//! `cgroup` finds, holds open and parses the stat files; this module has the figures' types
//! and [`MemoryReader`], which keeps each process's files and falls back to numa_maps.

mod cgroup;
mod hugetlb;
pub mod numa_maps;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroup::CgroupFiles;

/// A VM's memory cgroup could not be found or read, or is not in the kernel's format.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A file could not be read (the VM may have just stopped).
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// /proc/PID/cgroup names no memory cgroup.
    #[error("{}: no memory cgroup (neither a v1 memory line nor a v2 line)", path.display())]
    NoCgroup {
        /// The /proc/PID/cgroup file.
        path: PathBuf,
    },
    /// The stat file is not what the kernel writes.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Resident bytes on each NUMA node.
pub type BytesByNode = BTreeMap<u32, u64>;

/// Where a VM's memory figures come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemorySource {
    /// Its cgroups' counters (memory.numa_stat, hugetlb.*.numa_stat), read every
    /// `placement_read_seconds`.
    #[default]
    Cgroup,
    /// /proc/PID/numa_maps, read at most every `numa_maps_fallback_seconds`.
    NumaMaps,
    /// The cgroups' counters, and the nodes of the hugetlb pages no cgroup counts from
    /// numa_maps' huge mappings, read at most every `numa_maps_fallback_seconds`.
    CgroupAndNumaMaps,
}

impl MemorySource {
    /// The `source` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            MemorySource::Cgroup => "cgroup",
            MemorySource::NumaMaps => "numa_maps",
            MemorySource::CgroupAndNumaMaps => "cgroup+numa_maps",
        }
    }
}

/// A VM's resident memory by node.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resident {
    /// All of it (hugetlb pages included), by node.
    pub by_node: BytesByNode,
    /// Its hugetlb pages, by node (empty when there are none or they cannot be read).
    pub hugetlb_by_node: BytesByNode,
    /// Its hugetlb pages that no hugetlb cgroup counts (its /proc/PID/status
    /// `HugetlbPages`) and no numa_maps walk placed: on nodes unknown, so in neither map
    /// above. 0 where the cgroups count them, or the fallback walked them.
    pub hugetlb_node_unknown: u64,
    /// Where the figures come from.
    pub source: MemorySource,
}

/// Reads the memory of the process `pid` (its cgroups', that is) by node: /proc/PID/cgroup
/// under `proc_root`, the stat files under `cgroup_root` (normally /sys/fs/cgroup).
pub fn read(proc_root: &Path, cgroup_root: &Path, pid: u32) -> Result<Resident, MemoryError> {
    CgroupFiles::find(proc_root, cgroup_root, pid)?.read()
}

/// Reads each VM's memory from its cgroups at each call, and, for a VM whose cgroups cannot be
/// read (no memory cgroup, an odd layout), from numa_maps at most every `fallback`: the
/// figure in between is the last walk's.
#[derive(Debug, Default)]
pub struct MemoryReader {
    fallback: Option<Duration>,
    /// QEMU pid -> when its numa_maps was last read, whether for its huge mappings only,
    /// and what it said.
    walked: HashMap<u32, (Instant, bool, BytesByNode)>,
    /// QEMU pid -> its cgroups' stat files, as last found.
    found: HashMap<u32, CgroupFiles>,
}

impl MemoryReader {
    /// A reader whose numa_maps fallback runs at most every `fallback` (None: never).
    pub fn new(fallback: Option<Duration>) -> Self {
        MemoryReader {
            fallback,
            walked: HashMap::new(),
            found: HashMap::new(),
        }
    }

    /// The memory of process `pid` now; `Err` when it cannot be read (the process is gone,
    /// or its cgroups are unreadable and the fallback is off or failed too).
    pub fn read(
        &mut self,
        proc_root: &Path,
        cgroup_root: &Path,
        pid: u32,
        now: Instant,
    ) -> Result<Resident, MemoryError> {
        let cgroup_err = match self.read_cgroups(proc_root, cgroup_root, pid) {
            Ok(resident) if resident.hugetlb_node_unknown == 0 => {
                self.walked.remove(&pid);
                return Ok(resident);
            }
            Ok(resident) => return Ok(self.place_hugetlb(proc_root, pid, now, resident)),
            Err(e) => e,
        };
        let Some(every) = self.fallback else {
            return Err(cgroup_err);
        };
        tracing::debug!(pid, error = %cgroup_err, "memory by node from numa_maps");
        Ok(Resident {
            by_node: self.walk(proc_root, pid, now, every, false)?,
            source: MemorySource::NumaMaps,
            ..Default::default()
        })
    }

    /// A VM with hugetlb pages no cgroup counts: with the fallback on, their nodes from its
    /// numa_maps' huge mappings (only their nodes: the rest stays the cgroup's figure);
    /// without it, or if the walk fails, they stay on nodes unknown.
    fn place_hugetlb(
        &mut self,
        proc_root: &Path,
        pid: u32,
        now: Instant,
        mut resident: Resident,
    ) -> Resident {
        let Some(every) = self.fallback else {
            return resident;
        };
        match self.walk(proc_root, pid, now, every, true) {
            Ok(huge) => {
                for (node, bytes) in &huge {
                    *resident.by_node.entry(*node).or_default() += bytes;
                }
                // What the walk did not find (pages faulted in since, say) stays unknown.
                let found: u64 = huge.values().sum();
                resident.hugetlb_node_unknown = resident.hugetlb_node_unknown.saturating_sub(found);
                resident.hugetlb_by_node = huge;
                resident.source = MemorySource::CgroupAndNumaMaps;
            }
            Err(e) => tracing::debug!(pid, error = %e, "hugetlb pages by node not walked"),
        }
        resident
    }

    /// `pid`'s bytes by node from its numa_maps (its huge mappings alone when `huge_only`),
    /// walked at most every `every`: in between, the last walk's figure.
    fn walk(
        &mut self,
        proc_root: &Path,
        pid: u32,
        now: Instant,
        every: Duration,
        huge_only: bool,
    ) -> Result<BytesByNode, MemoryError> {
        if let Some((at, huge, last)) = self.walked.get(&pid) {
            if *huge == huge_only && now.duration_since(*at) < every {
                return Ok(last.clone());
            }
        }
        let by_node = numa_maps::read(proc_root, pid, huge_only)?;
        self.walked.insert(pid, (now, huge_only, by_node.clone()));
        Ok(by_node)
    }

    /// The cgroup counters of `pid`, from the files found for it before; when those cannot
    /// be read (the process moved, or is another one of the same pid), found anew.
    fn read_cgroups(
        &mut self,
        proc_root: &Path,
        cgroup_root: &Path,
        pid: u32,
    ) -> Result<Resident, MemoryError> {
        if let Some(files) = self.found.get(&pid) {
            if let Ok(resident) = files.read() {
                return Ok(resident);
            }
            self.found.remove(&pid);
        }
        let files = CgroupFiles::find(proc_root, cgroup_root, pid)?;
        let resident = files.read()?;
        self.found.insert(pid, files);
        Ok(resident)
    }

    /// A new fallback interval (a reload); the last walks stay.
    pub fn set_fallback(&mut self, fallback: Option<Duration>) {
        self.fallback = fallback;
    }

    /// Forgets the walks of processes `alive` says are gone.
    pub fn retain(&mut self, alive: impl Fn(u32) -> bool) {
        self.walked.retain(|pid, _| alive(*pid));
        self.found.retain(|pid, _| alive(*pid));
    }
}

fn read_file(path: &Path) -> Result<String, MemoryError> {
    std::fs::read_to_string(path).map_err(|source| MemoryError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// `N1=123` -> (1, 123).
fn node_field(field: &str, sep: char) -> Result<(u32, u64), String> {
    field
        .split_once(sep)
        .and_then(|(n, v)| Some((n.strip_prefix('N')?.parse().ok()?, v.parse().ok()?)))
        .ok_or_else(|| format!("{field:?} is not N<node>=<count>"))
}

#[cfg(test)]
mod reader_tests;
