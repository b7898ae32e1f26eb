//! The slow fallback: a process's resident pages by node from `/proc/PID/numa_maps`. Reading
//! it walks the process's page tables under its mmap lock (a big VM's vCPUs fault and QEMU
//! maps while it runs), so the daemon reads it only for a VM whose memory cgroup cannot be
//! read, and at most every `numa_maps_fallback_seconds` (BENCHMARKS.md has its cost).
//!
//! Each line is a mapping: `ADDR POLICY [anon=P] [dirty=P] ... N0=P N1=P kernelpagesize_kB=K`;
//! the `N<node>=` counts are pages of that mapping's page size. Every mapping counts (guest
//! RAM, hugetlbfs too, QEMU's heap and its libraries' resident pages).

use std::path::Path;

use super::{node_field, read_file, BytesByNode, MemoryError};

/// The process `pid`'s resident bytes by node, from numa_maps under `proc_root`: of all its
/// mappings, or of its hugetlb ones alone (`huge_only`, numa_maps' `huge` flag).
pub fn read(proc_root: &Path, pid: u32, huge_only: bool) -> Result<BytesByNode, MemoryError> {
    let path = proc_root.join(pid.to_string()).join("numa_maps");
    let text = read_file(&path)?;
    parse(&text, huge_only).map_err(|reason| MemoryError::Format { path, reason })
}

fn parse(text: &str, huge_only: bool) -> Result<BytesByNode, String> {
    let mut nodes = BytesByNode::new();
    for (n, line) in text.lines().enumerate() {
        let fields = line.split_whitespace();
        if huge_only && !fields.clone().any(|f| f == "huge") {
            continue;
        }
        let page_kb = match fields
            .clone()
            .find_map(|f| f.strip_prefix("kernelpagesize_kB="))
        {
            Some(kb) => kb
                .parse::<u64>()
                .map_err(|_| format!("line {}: kernelpagesize_kB={kb:?} is no number", n + 1))?,
            None => 4,
        };
        // Node counts are `N<digits>=`; other keys (`anon=`, `mapmax=`, `file=/usr/N...`)
        // are not.
        for field in fields.filter(|f| {
            f.strip_prefix('N')
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        }) {
            let (node, pages) =
                node_field(field, '=').map_err(|e| format!("line {}: {e}", n + 1))?;
            *nodes.entry(node).or_default() += pages.saturating_mul(page_kb * 1024);
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn pages_by_node_times_each_mappings_page_size() {
        let text = "\
7f0000000000 default anon=262144 dirty=262144 active=0 N0=200000 N1=62144 kernelpagesize_kB=4
7f4000000000 bind:1 file=/dev/hugepages/libvirt/qemu/1-vm huge dirty=512 N1=512 kernelpagesize_kB=2048
55d000000000 default file=/usr/bin/qemu-system-x86_64 mapped=10 N0=10 kernelpagesize_kB=4
7ffc00000000 default stack anon=3 dirty=3 N0=3 kernelpagesize_kB=4
7ffd00000000 default
";
        let nodes = parse(text, false).unwrap();
        assert_eq!(
            nodes,
            BTreeMap::from([
                (0, (200000 + 10 + 3) * 4096),
                (1, 62144 * 4096 + 512 * 2 * 1024 * 1024),
            ])
        );
        // The hugetlbfs mapping alone.
        assert_eq!(
            parse(text, true).unwrap(),
            BTreeMap::from([(1, 512 * 2 * 1024 * 1024)])
        );
    }

    #[test]
    fn malformed_lines_are_named_and_this_process_reads() {
        assert!(parse("7f default N0=x kernelpagesize_kB=4\n", false)
            .unwrap_err()
            .contains("line 1"));
        assert!(parse("7f default N0=1 kernelpagesize_kB=big\n", false)
            .unwrap_err()
            .contains("kernelpagesize_kB"));
        let own = read(Path::new("/proc"), std::process::id(), false).unwrap();
        assert!(own.values().sum::<u64>() > 0, "{own:?}");
        assert!(matches!(
            read(Path::new("/proc"), u32::MAX, false),
            Err(MemoryError::Read { .. })
        ));
    }
}
