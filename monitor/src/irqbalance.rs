//! Whether irqbalance runs: a process whose `comm` is `irqbalance` under the proc root
//! (`irq_proc_root`, so a fixture can hold one), with the IRQs its command line bans. pinsight
//! does not fight it: while it runs, a GPU line it may move is reported, not written.
//!
//! One read of each `<root>/<pid>/comm` (a few hundred small reads on a host), so the daemon
//! looks every `rescan_seconds` but at least once every 5 s (as a source without events is
//! rescanned), and only while a GPU VM runs.

use std::path::Path;

use crate::policy::fixes::{banned_irqs, Irqbalance};

/// Most process directories looked at (a host has far fewer; a hostile tree is bounded).
const MAX_PROCESSES: usize = 100_000;

/// The running irqbalance under `root`, if any.
pub fn find(root: &Path) -> Option<Irqbalance> {
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten().take(MAX_PROCESSES) {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        // A process that exited between the listing and the read is simply not it.
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if comm.trim_end() != "irqbalance" {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let text = String::from_utf8_lossy(&cmdline);
        let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
        return Some(Irqbalance {
            pid,
            banned: banned_irqs(args.get(1..).unwrap_or_default()),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_irqbalance_and_the_irqs_it_bans() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(find(dir.path()), None);
        let p = dir.path().join("77");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(p.join("comm"), "sshd\n").unwrap();
        let q = dir.path().join("4242");
        std::fs::create_dir_all(&q).unwrap();
        std::fs::write(q.join("comm"), "irqbalance\n").unwrap();
        std::fs::write(
            q.join("cmdline"),
            [
                "/usr/sbin/irqbalance",
                "--foreground",
                "--banirq=156",
                "-i",
                "157",
                "-i158",
                "",
            ]
            .join("\0"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("irq")).unwrap();
        let found = find(dir.path()).unwrap();
        assert_eq!(found.pid, 4242);
        assert_eq!(
            found.banned.into_iter().collect::<Vec<_>>(),
            [156, 157, 158]
        );
        assert_eq!(find(&dir.path().join("nope")), None);
    }
}
