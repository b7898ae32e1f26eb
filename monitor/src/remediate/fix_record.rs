//! The record of pinsight's memory and interrupt fixes on a VM: what each IRQ's affinity was
//! before pinsight first moved it and what pinsight set, the memory move it made (nodes or
//! nodeset before and after), and when. One JSON file per VM, `fixes-<UUID>.json` under
//! `[qmp] state_dir`, written atomically *before* the change it describes (so a crash between
//! the two still leaves what `pinsight restore` needs), read bounded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::state_file::{self, StateFileError};
use crate::policy::fixes::MemoryMethod;

/// Largest record read.
const MAX_BYTES: u64 = 256 * 1024;

/// A fix that could not be made or undone; names the VM, the file or call, and the reason.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    /// The record cannot be read, parsed or written.
    #[error(transparent)]
    Record(#[from] StateFileError),
    /// An IRQ's affinity file cannot be read or written.
    #[error("domain {domain}: {step} {}: {source}{}", path.display(), rollback_note(rollback))]
    IrqFile {
        /// Domain name.
        domain: String,
        /// "writing 1 to" / "reading".
        step: String,
        /// The smp_affinity_list file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
        /// Lines put back before the error was returned (earlier lines of the same fix).
        rollback: Vec<String>,
    },
    /// Compare-and-set: the affinity is no longer what the fix was decided from.
    #[error("domain {domain}: IRQ {irq} is now on CPUs {now}, not {expected} as when the fix was decided: someone else moved it, so pinsight writes nothing over it")]
    IrqChanged {
        /// Domain name.
        domain: String,
        /// The IRQ.
        irq: u32,
        /// Its affinity now.
        now: String,
        /// What the decision saw.
        expected: String,
    },
    /// The QEMU process is gone (the VM stopped since the scan): nothing was moved.
    #[error(
        "domain {domain}: QEMU pid {pid} is gone (the VM stopped since the scan): nothing moved"
    )]
    Gone {
        /// Domain name.
        domain: String,
        /// The pid scanned.
        pid: u32,
    },
    /// migrate_pages(2) failed.
    #[error("domain {domain}: migrate_pages(pid {pid}, nodes {from} -> {to}) failed: {source}{}", if *nothing_moved { "; the kernel refused before moving any page, nothing changed" } else { "; some pages may have moved (pinsight restore moves them back)" })]
    MigratePages {
        /// Domain name.
        domain: String,
        /// QEMU pid.
        pid: u32,
        /// Source nodes.
        from: String,
        /// Target nodes.
        to: String,
        /// The errno.
        source: std::io::Error,
        /// Whether the kernel refuses such a call before moving anything (EINVAL, EPERM, ESRCH).
        nothing_moved: bool,
    },
    /// libvirt refused the live numatune change.
    #[error("domain {domain}: setting the live numatune nodeset to {nodeset} failed: {message}; nothing changed")]
    Numatune {
        /// Domain name.
        domain: String,
        /// The nodeset asked for.
        nodeset: String,
        /// libvirt's message.
        message: String,
    },
    /// `restore` on a VM pinsight has not fixed.
    #[error("domain {domain}: no memory or interrupt fix recorded in {}", path.display())]
    NothingToRestore {
        /// Domain name.
        domain: String,
        /// The record looked for.
        path: PathBuf,
    },
}

fn rollback_note(rollback: &[String]) -> String {
    if rollback.is_empty() {
        String::new()
    } else {
        format!("; put back: {}", rollback.join(", "))
    }
}

/// One IRQ pinsight moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IrqRecord {
    /// The GPU it belongs to.
    pub gpu: String,
    /// Its smp_affinity_list before pinsight first moved it.
    pub original: String,
    /// What pinsight set.
    pub set: String,
}

/// The memory move pinsight made (or is making).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryRecord {
    /// How.
    pub method: MemoryMethod,
    /// Nodes moved from.
    pub from: String,
    /// Nodes moved to.
    pub to: String,
    /// The QEMU process moved (restore moves back only the same process).
    pub pid: u32,
    /// Bytes off the GPU's nodes when decided.
    pub bytes: u64,
}

/// The whole record of one VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixRecord {
    /// The domain's UUID.
    pub uuid: String,
    /// Its name when written (for people).
    pub domain: String,
    /// Moved IRQs by number.
    pub irqs: BTreeMap<u32, IrqRecord>,
    /// The memory move, if one was made.
    pub memory: Option<MemoryRecord>,
    /// When the last memory fix was tried (Unix seconds): its cooldown across restarts.
    pub last_memory: Option<f64>,
    /// When the last interrupt fix was made.
    pub last_irq: Option<f64>,
}

impl FixRecord {
    /// Whether there is anything to restore.
    pub fn is_empty(&self) -> bool {
        self.irqs.is_empty() && self.memory.is_none()
    }
}

/// The record file of the VM of UUID `uuid` in `dir`.
pub fn path(dir: &Path, uuid: &str) -> PathBuf {
    // A UUID from libvirt is hex and dashes; anything else must not reach a path.
    let safe: String = uuid
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    dir.join(format!("fixes-{safe}.json"))
}

/// The record of the VM `uuid` (named `domain`) in `dir` with its path, an empty one when
/// there is none yet: what a fix adds its before/after to.
pub fn open(dir: &Path, uuid: &str, domain: &str) -> Result<(PathBuf, FixRecord), StateFileError> {
    let path = path(dir, uuid);
    let record = read(&path)?.unwrap_or_else(|| FixRecord {
        uuid: uuid.to_string(),
        domain: domain.to_string(),
        ..Default::default()
    });
    Ok((path, record))
}

/// Reads the record at `path`; an absent file is `None`.
pub fn read(path: &Path) -> Result<Option<FixRecord>, StateFileError> {
    let failed = |source| StateFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(failed)?,
    };
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(StateFileError::Refused {
            path: path.to_path_buf(),
            what: format!(
                "not a regular file of at most {MAX_BYTES} bytes ({} bytes)",
                meta.len()
            ),
        });
    }
    let text = std::fs::read_to_string(path).map_err(failed)?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| StateFileError::Invalid {
            path: path.to_path_buf(),
            reason: format!("not a pinsight fixes record: {e}"),
        })
}

/// Writes `record` to `path` atomically; an empty record removes the file.
pub fn write(path: &Path, record: &FixRecord) -> Result<(), StateFileError> {
    if record.is_empty() && record.last_memory.is_none() && record.last_irq.is_none() {
        return state_file::remove(path);
    }
    let text = serde_json::to_vec_pretty(record).map_err(|e| StateFileError::Write {
        path: path.to_path_buf(),
        step: "encoding the fixes record",
        source: std::io::Error::other(e),
    })?;
    state_file::write_atomic(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_a_bad_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), "1234-ab/../x");
        assert!(p.ends_with("fixes-1234-ab____x.json"), "{}", p.display());
        assert_eq!(read(&p).unwrap(), None);
        let mut record = FixRecord {
            uuid: "u".into(),
            domain: "vm".into(),
            ..Default::default()
        };
        record.irqs.insert(
            156,
            IrqRecord {
                gpu: "0000:3b:00.0".into(),
                original: "0".into(),
                set: "1".into(),
            },
        );
        write(&p, &record).unwrap();
        assert_eq!(read(&p).unwrap(), Some(record));
        std::fs::write(&p, "{\"uuid\": 3}").unwrap();
        let err = read(&p).unwrap_err().to_string();
        assert!(
            err.contains(&p.display().to_string()) && err.contains("fixes record"),
            "{err}"
        );
        write(&p, &FixRecord::default()).unwrap();
        assert!(!p.exists());
    }
}
