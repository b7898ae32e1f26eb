//! Moves a VM's memory to its GPU's node(s): migrate_pages(2) of the QEMU process, as numad
//! does, or libvirt's live numatune nodeset change (`virDomainSetNumaParameters`, which
//! libvirt >= 8.0 allows only under mode='restrictive'). The move is recorded before the call
//! (so restore can move it back), and the record is taken back when the kernel or libvirt
//! refused the call before moving anything.

use std::path::Path;

use virt::domain::{Domain, NUMAParameters};

use super::fix_record::{self, FixError, FixRecord, MemoryRecord};
use crate::cpuset::CpuSet;
use crate::policy::fixes::{MemoryFix, MemoryMethod};

/// Bits of the node masks passed to migrate_pages: the kernel's MAX_NUMNODES is at most 1024.
const MASK_BITS: usize = 1024;

/// A node set as the kernel's `unsigned long` bitmap.
fn node_mask(nodes: &CpuSet) -> Vec<libc::c_ulong> {
    let bits = libc::c_ulong::BITS as usize;
    let mut mask = vec![0; MASK_BITS / bits];
    for n in nodes.iter().map(|n| n as usize).filter(|n| *n < MASK_BITS) {
        mask[n / bits] |= 1 << (n % bits);
    }
    mask
}

/// migrate_pages(2): moves the pages of `pid` on `from` to `to`. Returns the pages that could
/// not be moved (busy, pinned), or the errno.
pub fn migrate_pages(pid: u32, from: &CpuSet, to: &CpuSet) -> std::io::Result<u64> {
    let (old, new) = (node_mask(from), node_mask(to));
    // SAFETY: both masks are live buffers of MASK_BITS bits, which is what maxnode - 1 says
    // (the kernel reads maxnode - 1 bits); the call only reads them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_migrate_pages,
            pid as libc::c_long,
            (MASK_BITS + 1) as libc::c_ulong,
            old.as_ptr(),
            new.as_ptr(),
        )
    };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc as u64)
    }
}

/// How the memory of `fix` is moved, behind a trait so restore and apply share it.
pub trait NumatuneCall {
    /// Sets the live numatune nodeset.
    fn set_nodeset(&self, nodeset: &str) -> Result<(), String>;
}

impl NumatuneCall for Domain {
    fn set_nodeset(&self, nodeset: &str) -> Result<(), String> {
        let params = NUMAParameters {
            node_set: Some(nodeset.to_string()),
            mode: None,
        };
        self.set_numa_parameters(params, virt::sys::VIR_DOMAIN_AFFECT_LIVE)
            .map_err(|e| e.message().to_string())
    }
}

/// Whether migrate_pages refuses with `e` before moving any page (bad node masks, no
/// permission, no such process): its checks all come before the first move.
fn refused_before_moving(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EPERM | libc::ESRCH)
    )
}

/// Applies `fix` (a migrate_pages or numatune method; a restart is never tried). `domain`
/// makes the numatune call. Returns what was done, in words.
pub fn apply(
    fix: &MemoryFix,
    domain: Option<&dyn NumatuneCall>,
    proc_root: &Path,
    record_dir: &Path,
    now: f64,
) -> Result<String, FixError> {
    if !proc_root.join(fix.pid.to_string()).exists() {
        return Err(FixError::Gone {
            domain: fix.domain.clone(),
            pid: fix.pid,
        });
    }
    let (path, mut record) = fix_record::open(record_dir, &fix.uuid, &fix.domain)?;
    let before = record.clone();
    let (from, to) = match &fix.method {
        MemoryMethod::Numatune { before, after } => (before.clone(), after.clone()),
        _ => (fix.from.to_string(), fix.to.to_string()),
    };
    // The first move's origin is kept: restore goes back to where the VM was.
    let origin = record
        .memory
        .as_ref()
        .map_or(from.clone(), |m| m.from.clone());
    record.memory = Some(MemoryRecord {
        method: fix.method.clone(),
        from: origin,
        to: to.clone(),
        pid: fix.pid,
        bytes: fix.bytes,
    });
    record.last_memory = Some(now);
    fix_record::write(&path, &record)?;
    let undo = |mut before: FixRecord| {
        before.last_memory = Some(now);
        // Best effort: a record left naming a move only makes restore try a no-op.
        let _ = fix_record::write(&path, &before);
    };
    match (&fix.method, domain) {
        (MemoryMethod::Numatune { after, .. }, Some(domain)) => {
            domain.set_nodeset(after).map_err(|message| {
                undo(before);
                FixError::Numatune {
                    domain: fix.domain.clone(),
                    nodeset: after.clone(),
                    message,
                }
            })?;
            Ok(format!("numatune nodeset {from} -> {after} (live)"))
        }
        (MemoryMethod::MigratePages, _) => match migrate_pages(fix.pid, &fix.from, &fix.to) {
            Ok(left) => Ok(format!(
                "migrate_pages of pid {} nodes {} -> {}: {} bytes off the GPU's node(s) \
                 asked to move, {left} pages could not be moved",
                fix.pid, fix.from, fix.to, fix.bytes
            )),
            Err(source) => {
                let nothing_moved = refused_before_moving(&source);
                if nothing_moved {
                    undo(before);
                }
                if source.raw_os_error() == Some(libc::ESRCH) {
                    return Err(FixError::Gone {
                        domain: fix.domain.clone(),
                        pid: fix.pid,
                    });
                }
                Err(FixError::MigratePages {
                    domain: fix.domain.clone(),
                    pid: fix.pid,
                    from: fix.from.to_string(),
                    to: fix.to.to_string(),
                    source,
                    nothing_moved,
                })
            }
        },
        // A strict numatune (or a numatune fix without a libvirt domain) is never tried.
        _ => {
            undo(before);
            Err(FixError::Numatune {
                domain: fix.domain.clone(),
                nodeset: to,
                message: "not tried: needs `virsh numatune --config` and a restart".into(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_masks_are_the_kernels_bitmaps() {
        let m = node_mask(&"0,2,65".parse().unwrap());
        assert_eq!(m.len() * libc::c_ulong::BITS as usize, MASK_BITS);
        assert_eq!(m[0], 0b101);
        assert_eq!(m[1], 0b10);
    }

    #[test]
    fn migrate_pages_on_this_host_is_a_real_call() {
        let me = std::process::id();
        let node0: CpuSet = "0".parse().unwrap();
        // node 0 -> node 0: a real call that moves nothing.
        assert_eq!(migrate_pages(me, &node0, &node0).unwrap(), 0);
        // A node with no memory (node 1000 exists nowhere): refused before any move.
        let err = migrate_pages(me, &node0, &"1000".parse().unwrap()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
        assert!(refused_before_moving(&err));
    }

    #[test]
    fn a_vm_whose_process_vanished_is_gone_and_nothing_is_recorded() {
        let state = tempfile::tempdir().unwrap();
        let fix = MemoryFix {
            domain: "vm".into(),
            uuid: "u-2".into(),
            // Above this host's pid_max (32768 here, 4194304 at most): no such process.
            pid: 4_194_305,
            bytes: 1 << 20,
            off_ratio: 1.0,
            from: "0".parse().unwrap(),
            to: "1".parse().unwrap(),
            method: MemoryMethod::MigratePages,
            verdict: crate::policy::fixes::FixVerdict::Apply,
            reason: String::new(),
        };
        let err = apply(&fix, None, Path::new("/proc"), state.path(), 1.0).unwrap_err();
        assert!(
            matches!(err, FixError::Gone { pid: 4_194_305, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("nothing moved"), "{err}");
        assert!(!fix_record::path(state.path(), "u-2").exists());
        // The same for a strict numatune's restart: never tried, nothing recorded but the time.
        let restart = MemoryFix {
            pid: std::process::id(),
            method: MemoryMethod::Restart,
            ..fix
        };
        let err = apply(&restart, None, Path::new("/proc"), state.path(), 1.0).unwrap_err();
        assert!(err.to_string().contains("not tried"), "{err}");
        let record = fix_record::read(&fix_record::path(state.path(), "u-2"))
            .unwrap()
            .unwrap();
        assert_eq!((record.memory, record.last_memory), (None, Some(1.0)));
    }
}
