//! Moves a GPU's interrupt lines: writes `/proc/irq/N/smp_affinity_list` under the proc root
//! (`irq_proc_root`: on a real host /proc, in tests a fixture), all lines of one fix or none.
//! Each line is written only over the affinity the fix was decided from (compare-and-set),
//! its original affinity is recorded before the first write, and a failed write puts the
//! lines already written back.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::fix_record::{self, FixError, IrqRecord};
use crate::cpuset::CpuSet;
use crate::policy::fixes::IrqFix;

/// The affinity file of `irq` under `root`.
pub fn affinity_path(root: &Path, irq: u32) -> PathBuf {
    root.join("irq")
        .join(irq.to_string())
        .join("smp_affinity_list")
}

/// The affinity of `irq` now.
pub fn read_affinity(root: &Path, domain: &str, irq: u32) -> Result<CpuSet, FixError> {
    let path = affinity_path(root, irq);
    let text = std::fs::read_to_string(&path).map_err(|source| FixError::IrqFile {
        domain: domain.to_string(),
        step: "reading".into(),
        path: path.clone(),
        source,
        rollback: Vec::new(),
    })?;
    text.trim().parse().map_err(|e| FixError::IrqFile {
        domain: domain.to_string(),
        step: "parsing".into(),
        path,
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e}")),
        rollback: Vec::new(),
    })
}

/// Writes `cpus` as the affinity of `irq` (never creates the file: an IRQ without one is
/// gone).
pub fn write_affinity(root: &Path, domain: &str, irq: u32, cpus: &CpuSet) -> Result<(), FixError> {
    let path = affinity_path(root, irq);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(format!("{cpus}\n").as_bytes()));
    written.map_err(|source| FixError::IrqFile {
        domain: domain.to_string(),
        step: format!("writing {cpus} to"),
        path,
        source,
        rollback: Vec::new(),
    })
}

/// Applies `fix` (all its lines, or none), recording each line's original affinity in the
/// VM's fixes record under `record_dir` first. Returns the lines moved, in words.
pub fn apply(
    root: &Path,
    record_dir: &Path,
    fix: &IrqFix,
    now: f64,
) -> Result<Vec<String>, FixError> {
    let domain = fix.domain.as_str();
    for line in &fix.lines {
        let current = read_affinity(root, domain, line.irq)?;
        if current != line.before {
            return Err(FixError::IrqChanged {
                domain: domain.to_string(),
                irq: line.irq,
                now: current.to_string(),
                expected: line.before.to_string(),
            });
        }
    }
    let (path, mut record) = fix_record::open(record_dir, &fix.uuid, &fix.domain)?;
    let before = record.clone();
    for line in &fix.lines {
        let entry = record.irqs.entry(line.irq).or_insert_with(|| IrqRecord {
            gpu: fix.gpu.clone(),
            original: line.before.to_string(),
            set: String::new(),
        });
        entry.set = line.after.to_string();
    }
    record.last_irq = Some(now);
    // The intent first: a crash after a write still leaves what restore needs.
    fix_record::write(&path, &record)?;
    let mut made = Vec::new();
    for line in &fix.lines {
        if let Err(e) = write_affinity(root, domain, line.irq, &line.after) {
            let mut rollback = Vec::new();
            for done in fix.lines.iter().take(made.len()).rev() {
                if write_affinity(root, domain, done.irq, &done.before).is_ok() {
                    rollback.push(format!("IRQ {} to {}", done.irq, done.before));
                }
            }
            let mut restored = before;
            restored.last_irq = Some(now);
            // Best effort: a record that still names the lines only makes restore rewrite
            // the affinity they already have.
            let _ = fix_record::write(&path, &restored);
            return Err(match e {
                FixError::IrqFile {
                    domain,
                    step,
                    path,
                    source,
                    ..
                } => FixError::IrqFile {
                    domain,
                    step,
                    path,
                    source,
                    rollback,
                },
                other => other,
            });
        }
        made.push(format!(
            "IRQ {} {} -> {}",
            line.irq, line.before, line.after
        ));
    }
    Ok(made)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::fixes::{FixVerdict, IrqMove};

    fn tree(lines: &[(u32, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (irq, cpus) in lines {
            let d = dir.path().join(format!("irq/{irq}"));
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("smp_affinity_list"), format!("{cpus}\n")).unwrap();
        }
        dir
    }

    fn fix(lines: &[(u32, &str, &str)]) -> IrqFix {
        IrqFix {
            domain: "vm".into(),
            uuid: "u-1".into(),
            gpu: "0000:3b:00.0".into(),
            lines: lines
                .iter()
                .map(|(irq, b, a)| IrqMove {
                    irq: *irq,
                    before: b.parse().unwrap(),
                    after: a.parse().unwrap(),
                })
                .collect(),
            verdict: FixVerdict::Apply,
            reason: String::new(),
        }
    }

    #[test]
    fn moves_every_line_and_records_the_originals_first() {
        let root = tree(&[(156, "0"), (157, "0-1")]);
        let state = tempfile::tempdir().unwrap();
        let made = apply(
            root.path(),
            state.path(),
            &fix(&[(156, "0", "1"), (157, "0-1", "1")]),
            5.0,
        )
        .unwrap();
        assert_eq!(made.len(), 2);
        assert_eq!(
            read_affinity(root.path(), "vm", 156).unwrap().to_string(),
            "1"
        );
        let record = fix_record::read(&fix_record::path(state.path(), "u-1"))
            .unwrap()
            .unwrap();
        assert_eq!(record.irqs[&157].original, "0-1");
        assert_eq!(record.last_irq, Some(5.0));
    }

    #[test]
    fn someone_elses_change_is_not_overwritten() {
        let root = tree(&[(156, "1")]);
        let state = tempfile::tempdir().unwrap();
        let err = apply(root.path(), state.path(), &fix(&[(156, "0", "1")]), 1.0).unwrap_err();
        assert!(
            matches!(err, FixError::IrqChanged { irq: 156, .. }),
            "{err}"
        );
        assert!(!fix_record::path(state.path(), "u-1").exists());
    }

    #[test]
    fn a_line_that_cannot_be_read_stops_the_fix_before_any_write() {
        // Root ignores mode bits, so an unreadable file is a directory in its place.
        let root = tree(&[(156, "0")]);
        std::fs::create_dir_all(root.path().join("irq/157/smp_affinity_list")).unwrap();
        let state = tempfile::tempdir().unwrap();
        let f = fix(&[(156, "0", "1"), (157, "0", "1")]);
        let err = apply(root.path(), state.path(), &f, 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("reading") && err.contains("irq/157/smp_affinity_list"),
            "{err}"
        );
        assert_eq!(
            read_affinity(root.path(), "vm", 156).unwrap().to_string(),
            "0"
        );
        // A missing file (the IRQ was freed) is never created.
        let gone = tree(&[(156, "0")]);
        assert!(apply(gone.path(), state.path(), &f, 1.0).is_err());
        assert!(!gone.path().join("irq/157/smp_affinity_list").exists());
    }

    #[test]
    fn a_write_the_kernel_refuses_puts_the_lines_already_moved_back() {
        // A read-only kernel file (sysfs refuses writes to it, also from root) in the place
        // of IRQ 157's: its check passes, its write fails after IRQ 156 was moved.
        let online = "/sys/devices/system/cpu/online";
        let cpus = std::fs::read_to_string(online).unwrap().trim().to_string();
        let root = tree(&[(156, "0")]);
        std::fs::create_dir_all(root.path().join("irq/157")).unwrap();
        std::os::unix::fs::symlink(online, root.path().join("irq/157/smp_affinity_list")).unwrap();
        let state = tempfile::tempdir().unwrap();
        let f = fix(&[(156, "0", "1"), (157, &cpus, "1")]);
        let err = apply(root.path(), state.path(), &f, 1.0)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("writing 1 to") && err.contains("put back: IRQ 156 to 0"),
            "{err}"
        );
        assert_eq!(
            read_affinity(root.path(), "vm", 156).unwrap().to_string(),
            "0"
        );
        let record = fix_record::read(&fix_record::path(state.path(), "u-1"))
            .unwrap()
            .unwrap();
        assert!(record.irqs.is_empty(), "{record:?}");
    }
}
