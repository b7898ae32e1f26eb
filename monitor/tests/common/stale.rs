//! Cleanup of what killed test runs leave behind (a test process killed by a timeout runs no
//! `Drop`): their domains and guest directories, found by our own naming scheme only.

use super::virsh;
use super::virsh::destroy;
use super::vm::NAME_PREFIX;
use std::path::Path;

/// Destroys test domains (and guest dirs) left behind by test processes that no longer exist,
/// e.g. a run killed by a timeout. Only names of our own scheme, only by name.
pub(super) fn reap_stale() {
    let running = virsh(&["list", "--name"]).unwrap_or_default();
    for name in running
        .lines()
        .map(str::trim)
        .filter(|n| n.starts_with(NAME_PREFIX))
    {
        if owner_is_gone(name) {
            eprintln!("destroying stale test domain {name} (its test process is gone)");
            if let Err(e) = destroy(name) {
                eprintln!("warning: {e}");
            }
        }
    }
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let pid = file_name
            .to_str()
            .and_then(|n| n.strip_prefix("pinsight-test-guest-"));
        if let Some(Ok(pid)) = pid.map(str::parse::<u32>) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// `pinsight-test-<hint>-<pid>-<n>`: true when that pid is no longer a live process.
fn owner_is_gone(name: &str) -> bool {
    let mut parts = name.rsplitn(3, '-');
    let (_n, pid) = (parts.next(), parts.next());
    match pid.and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}
