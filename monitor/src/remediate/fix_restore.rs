//! `pinsight restore` for the memory and interrupt fixes: puts each IRQ pinsight moved back
//! to its original affinity (only if it is still where pinsight put it) and moves the memory
//! back (migrate_pages the other way, or the numatune nodeset from before), then clears
//! what was restored from the record (the cooldown times stay).

use std::path::Path;

use super::fix_record::{self, FixError};
use super::irq::{read_affinity, write_affinity};
use super::memory::{migrate_pages, NumatuneCall};
use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::policy::fixes::MemoryMethod;

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FixRestore {
    /// Steps made or found unnecessary, in words.
    pub done: Vec<String>,
    /// Steps that failed (kept in the record for another try).
    pub failed: Vec<String>,
}

/// Restores the fixes recorded for `vm` in `record_dir`. `irq_root` is the IRQ proc root,
/// `proc_root` the one of processes; `domain` makes numatune calls.
pub fn restore(
    vm: &Vm,
    irq_root: &Path,
    proc_root: &Path,
    record_dir: &Path,
    domain: Option<&dyn NumatuneCall>,
) -> Result<FixRestore, FixError> {
    let path = fix_record::path(record_dir, &vm.uuid);
    let mut record = match fix_record::read(&path)? {
        Some(r) if !r.is_empty() => r,
        _ => {
            return Err(FixError::NothingToRestore {
                domain: vm.name.clone(),
                path,
            })
        }
    };
    let mut out = FixRestore::default();
    let name = vm.name.as_str();
    record.irqs.retain(|irq, r| {
        let now = match read_affinity(irq_root, name, *irq) {
            Ok(now) => now,
            Err(e) => {
                out.done
                    .push(format!("IRQ {irq}: not restored, its line is gone ({e})"));
                return false;
            }
        };
        let (Ok(set), Ok(original)) = (r.set.parse::<CpuSet>(), r.original.parse::<CpuSet>())
        else {
            out.failed
                .push(format!("IRQ {irq}: the record's CPU lists are not lists"));
            return true;
        };
        if now != set {
            out.done.push(format!(
                "IRQ {irq}: left on {now}: someone else moved it from pinsight's {set}"
            ));
            return false;
        }
        match write_affinity(irq_root, name, *irq, &original) {
            Ok(()) => {
                out.done.push(format!("IRQ {irq} {set} -> {original}"));
                false
            }
            Err(e) => {
                out.failed.push(e.to_string());
                true
            }
        }
    });
    if let Some(m) = record.memory.take() {
        let result = match &m.method {
            MemoryMethod::Numatune { .. } => match domain {
                Some(d) if !m.from.is_empty() => d
                    .set_nodeset(&m.from)
                    .map(|()| format!("numatune nodeset {} -> {} (live)", m.to, m.from))
                    .map_err(|e| format!("numatune nodeset back to {}: {e}", m.from)),
                _ => Err("numatune: no libvirt domain to set the nodeset on".to_string()),
            },
            MemoryMethod::MigratePages if m.pid != vm.pid => Ok(format!(
                "memory: not moved back, QEMU pid {} is not the one moved ({}): the VM \
                 restarted and placed its memory anew",
                vm.pid, m.pid
            )),
            MemoryMethod::MigratePages if !proc_root.join(m.pid.to_string()).exists() => {
                Ok(format!("memory: QEMU pid {} is gone", m.pid))
            }
            MemoryMethod::MigratePages => {
                match (m.to.parse::<CpuSet>(), m.from.parse::<CpuSet>()) {
                    (Ok(to), Ok(from)) => migrate_pages(m.pid, &to, &from)
                        .map(|left| {
                            format!(
                                "memory of pid {} nodes {to} -> {from} ({left} pages stayed)",
                                m.pid
                            )
                        })
                        .map_err(|e| {
                            format!("migrate_pages of pid {} nodes {to} -> {from}: {e}", m.pid)
                        }),
                    _ => Err("memory: the record's node lists are not lists".to_string()),
                }
            }
            MemoryMethod::Restart => Ok("memory: nothing was moved".to_string()),
        };
        match result {
            Ok(done) => out.done.push(done),
            Err(e) => {
                out.failed.push(e);
                record.memory = Some(m);
            }
        }
    }
    fix_record::write(&path, &record)?;
    Ok(out)
}
