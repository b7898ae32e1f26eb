//! The record of a VM without libvirt (a QEMU found through its QMP socket), which has no
//! domain metadata to keep it in: one JSON file per VM under `[qmp] state_dir`, holding the
//! same [`Record`] a libvirt domain keeps (intent, pins from before pinsight, last action) and
//! the process it was written for. Written atomically (temporary file, fsync, rename, fsync
//! of the directory), so a crash leaves the old record or the new one, never half of one.
//! Read bounded: at most [`MAX_BYTES`], without following a symlink or blocking on a FIFO.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::policy::record::Record;

/// Largest state file read: a record of a few hundred vCPUs fits many times over.
pub const MAX_BYTES: u64 = 64 * 1024;
/// The format written; another is refused.
pub const FORMAT: u32 = 1;
/// CPUs sched_setaffinity can name with a `cpu_set_t`: a record naming more is hostile.
const MAX_CPU: u32 = libc::CPU_SETSIZE as u32;

/// A state file that cannot be used; names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// Opening or reading failed.
    #[error("state file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Not a regular file, or larger than [`MAX_BYTES`].
    #[error("state file {path}: {what}, so it is not read")]
    Refused {
        /// The file.
        path: PathBuf,
        /// "1048576 bytes, more than the 65536 a record can take".
        what: String,
    },
    /// Bad JSON, another format, or CPUs no host has.
    #[error("state file {path}: {reason}; the VM is not moved until it is fixed or removed")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing failed (the old record, if any, is still in place).
    #[error("state file {path}: {step} failed: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// "writing the temporary file".
        step: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateFile {
    /// Always 1.
    pub format: u32,
    /// The VM's name when written (for people).
    pub vm: String,
    /// The QEMU process it was written for, and that process's start time (clock ticks
    /// after boot): a record of another process (an exited QEMU, a recycled pid) is stale.
    pub pid: u32,
    /// See `pid`.
    pub start_time: u64,
    /// pinsight's record, as a libvirt domain keeps it in its metadata.
    pub record: Record,
}

/// The start time of process `pid` under `proc_root`, if it runs.
pub fn process_start(proc_root: &Path, pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    // Field 22; the command name (field 2) may hold spaces and ')', so count after the last.
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// The file name's key: the UUID, or (a QEMU without one) its name, pid and start time.
/// Only `[A-Za-z0-9._-]` survive, so no name reaches outside the directory.
pub fn key(name: &str, uuid: &str, pid: u32, start_time: u64) -> String {
    let raw = if uuid.is_empty() {
        format!("{name}-{pid}-{start_time}")
    } else {
        uuid.to_ascii_lowercase()
    };
    raw.chars()
        .map(|c| match c {
            'A'..='Z' | 'a'..='z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect()
}

/// Where the record of `vm` (whose process started at `start_time`) lives in `dir`.
pub fn path(dir: &Path, vm: &Vm, start_time: u64) -> PathBuf {
    path_of(dir, &vm.name, &vm.uuid, vm.pid, start_time)
}

/// [`path`] from the VM's name, UUID (may be empty) and pid.
pub fn path_of(dir: &Path, name: &str, uuid: &str, pid: u32, start_time: u64) -> PathBuf {
    dir.join(format!("qmp-{}.json", key(name, uuid, pid, start_time)))
}

/// Reads `path`; `None` when there is none.
pub fn read(path: &Path) -> Result<Option<StateFile>, StateFileError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    let refused = |what: String| StateFileError::Refused {
        path: path.to_path_buf(),
        what,
    };
    let meta = file.metadata().map_err(|source| StateFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(refused("not a regular file".into()));
    }
    if meta.len() > MAX_BYTES {
        return Err(refused(format!(
            "{} bytes, more than the {MAX_BYTES} a record can take",
            meta.len()
        )));
    }
    let mut text = String::new();
    // Bounded even if the file grows after the size was read.
    file.take(MAX_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|source| StateFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_BYTES {
        return Err(refused(format!("more than {MAX_BYTES} bytes")));
    }
    parse(path, &text).map(Some)
}

/// Parses and checks a state file's text.
pub fn parse(path: &Path, text: &str) -> Result<StateFile, StateFileError> {
    let invalid = |reason: String| StateFileError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let file: StateFile =
        serde_json::from_str(text).map_err(|e| invalid(format!("not a pinsight record: {e}")))?;
    if file.format != FORMAT {
        return Err(invalid(format!(
            "format {} (this pinsight reads format {FORMAT})",
            file.format
        )));
    }
    let mut sets: Vec<&CpuSet> = Vec::new();
    if let Some(o) = &file.record.original {
        sets.extend(o.vcpus.values());
        sets.extend(o.emulator.iter());
    }
    if let Some(a) = &file.record.last {
        sets.extend(a.vcpus.values().flat_map(|(b, a)| [b, a]));
        sets.extend(a.emulator.iter().flat_map(|(b, a)| [b, a]));
    }
    if let Some(bad) = sets
        .iter()
        .find(|s| s.iter().last().is_some_and(|max| max >= MAX_CPU))
    {
        return Err(invalid(format!(
            "CPU list {bad} names CPUs beyond {} (no host has them)",
            MAX_CPU - 1
        )));
    }
    Ok(file)
}

/// Writes `file` to `path` atomically: a temporary file in the same directory, fsync,
/// rename over `path`, fsync of the directory. The directory is created (mode 0700) if
/// missing.
pub fn write(path: &Path, file: &StateFile) -> Result<(), StateFileError> {
    let text = serde_json::to_vec_pretty(file).map_err(|e| StateFileError::Write {
        path: path.to_path_buf(),
        step: "encoding the record",
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &text)
}

/// Writes `text` to `path` the way [`write`] does (also the memory and interrupt fixes'
/// records, `remediate::fix_record`).
pub fn write_atomic(path: &Path, text: &[u8]) -> Result<(), StateFileError> {
    let failed = |step: &'static str| {
        move |source| StateFileError::Write {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(failed("creating the directory"))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(failed("setting the directory's mode"))?;
    }
    let name = path
        .file_name()
        .map_or_else(|| "state".into(), |n| n.to_string_lossy().into_owned());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&temp)
        .map_err(failed("creating the temporary file"))?;
    let written = out.write_all(text).and_then(|()| out.sync_all());
    if let Err(source) = written {
        let _ = fs::remove_file(&temp);
        return Err(StateFileError::Write {
            path: path.to_path_buf(),
            step: "writing the temporary file",
            source,
        });
    }
    if let Err(source) = fs::rename(&temp, path) {
        let _ = fs::remove_file(&temp);
        return Err(StateFileError::Write {
            path: path.to_path_buf(),
            step: "renaming the temporary file over it",
            source,
        });
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(failed("syncing the directory"))
}

/// Removes the record at `path` (absent is fine).
pub fn remove(path: &Path) -> Result<(), StateFileError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateFileError::Write {
            path: path.to_path_buf(),
            step: "removing it",
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Removes the records in `dir` whose QEMU process is gone (it exited, mid-repin or later):
/// their pins died with it. Returns the files removed and the problem lines.
pub fn sweep(dir: &Path, proc_root: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let (mut removed, mut problems) = (Vec::new(), Vec::new());
    let Ok(entries) = fs::read_dir(dir) else {
        return (removed, problems);
    };
    // Bounded: a directory stuffed with files is not read to its end.
    for entry in entries.flatten().take(10_000) {
        let path = entry.path();
        let is_record = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("qmp-") && n.ends_with(".json"));
        if !is_record {
            continue;
        }
        match read(&path) {
            Ok(Some(f)) if process_start(proc_root, f.pid) != Some(f.start_time) => {
                match remove(&path) {
                    Ok(()) => removed.push(path),
                    Err(e) => problems.push(e.to_string()),
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    (removed, problems)
}
