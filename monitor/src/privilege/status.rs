//! Capability sets as the kernel shows them: the Cap* lines of /proc/self/task/TID/status,
//! the authority on what each thread holds (the drop is checked against it).

use super::PrivilegeError;

/// The process's thread ids, from /proc/self/task.
pub(super) fn threads() -> Result<Vec<u32>, PrivilegeError> {
    let dir = "/proc/self/task";
    let entries = std::fs::read_dir(dir).map_err(|source| PrivilegeError::Proc {
        path: dir.into(),
        source,
    })?;
    Ok(entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect())
}

/// One thread's capability sets, as the kernel shows them in its status file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadCaps {
    /// CapEff.
    pub effective: u64,
    /// CapPrm.
    pub permitted: u64,
    /// CapInh.
    pub inheritable: u64,
    /// CapBnd.
    pub bounding: u64,
    /// CapAmb.
    pub ambient: u64,
}

impl ThreadCaps {
    /// Thread `tid` of this process; None if it has exited.
    pub(super) fn read(tid: u32) -> Result<Option<ThreadCaps>, PrivilegeError> {
        let path = format!("/proc/self/task/{tid}/status");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(ThreadCaps::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            // A thread that exits between listing and reading gives ESRCH.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
            Err(source) => Err(PrivilegeError::Proc { path, source }),
        }
    }

    /// The Cap* lines of a /proc status file; a missing or odd line reads as all bits set,
    /// so it never passes for "dropped".
    pub fn parse(status: &str) -> ThreadCaps {
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX)
        };
        ThreadCaps {
            effective: field("CapEff"),
            permitted: field("CapPrm"),
            inheritable: field("CapInh"),
            bounding: field("CapBnd"),
            ambient: field("CapAmb"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use caps::Capability;

    #[test]
    fn status_lines_are_read_and_missing_ones_never_pass_for_dropped() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\n\
                      CapEff:\t000001ffffffffff\nCapBnd:\t0000008000000000\nCapAmb:\t0\n";
        let caps = ThreadCaps::parse(status);
        assert_eq!(caps.permitted, 0x1ff_ffff_ffff);
        assert_eq!(caps.bounding, Capability::CAP_BPF.bitmask());
        assert_eq!(caps.ambient, 0);
        assert_eq!(ThreadCaps::parse("Name:\tx\n").effective, u64::MAX);
    }
}
