//! One pinsight per host: an exclusive `flock` on a file (by default
//! `/run/pinsight/pinsight.lock`), taken before anything else, held for the life of the
//! process. Two daemons in enforce mode would each act on the same VMs and double the
//! host's rate limit; the second one exits naming the holder's pid instead.
//!
//! The kernel drops the lock when the holder dies, kill -9 included, so a stale file never
//! blocks a restart; the pid written in it is only for the message.

use std::fs::File;
use std::io::{Read as _, Seek as _, Write as _};
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};

/// Where the lock lives unless `--lock-file` says otherwise (systemd's RuntimeDirectory).
pub const DEFAULT_LOCK_FILE: &str = "/run/pinsight/pinsight.lock";

/// The lock could not be taken; names the file (and the holder when another pinsight has it).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another pinsight ({holder}) holds {}: one pinsight per host (stop it first, or give \
         this one another --lock-file if it watches another host)",
        path.display()
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// "pid N" as the holder wrote it, or "pid unknown".
        holder: String,
    },
    /// The file or its directory cannot be created or locked.
    #[error("cannot take the instance lock {}: {source}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

impl InstanceLock {
    /// Takes the lock at `path` without waiting, creating the file and its directory, and
    /// writes this process's pid into it.
    pub fn acquire(path: &Path) -> Result<InstanceLock, LockError> {
        let io = |source| LockError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        // SAFETY: flock on a file descriptor we own; it only changes the lock state.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io(err));
            }
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("pid {pid}"),
                Err(_) => "pid unknown".to_string(),
            };
            return Err(LockError::Held {
                path: path.to_path_buf(),
                holder,
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(InstanceLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/pinsight.lock");
        let held = InstanceLock::acquire(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        // flock locks belong to the open file description: a second open in this process
        // conflicts exactly as another process's would.
        let err = InstanceLock::acquire(&path).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains(&path.display().to_string()),
            "{err}"
        );
        drop(held);
        InstanceLock::acquire(&path).unwrap();
    }

    #[test]
    fn an_unusable_path_is_named() {
        let err = InstanceLock::acquire(Path::new("/proc/pinsight/x.lock"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/proc/pinsight/x.lock"), "{err}");
    }
}
