//! `pinsight restore`: puts back, live, the pins a VM had before pinsight first acted on it,
//! and records that in its state metadata. A QEMU without libvirt (found through its QMP
//! socket) is restored from its state file under `[qmp] state_dir`, which is then removed.
//! The memory and interrupt fixes recorded for the VM (`fixes-<UUID>.json` there) are put
//! back too: IRQ affinities, and the memory moved back (numatune nodeset or migrate_pages).

use std::path::Path;

use clap::Args;

use super::host::{find_vm, host_paths, read_topology, scan, HostArgs};
use super::CliError;
use crate::config::Config;
use crate::inventory::{Access, Vm};
use crate::policy::record::describe;
use crate::policy::unix_now;
use crate::remediate::fix_record::FixError;
use crate::remediate::fix_restore::{self, FixRestore};
use crate::remediate::memory::NumatuneCall;
use crate::remediate::{state_file, ProcessVm, RemediateError};

/// Arguments of `pinsight restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// The VM's name: a libvirt domain, or a QEMU without libvirt found through its QMP
    /// socket ([qmp] sockets), whose original pins come back from its state file in
    /// [qmp] state_dir (the file is removed then).
    pub domain: String,
}

/// Restores the VM's original pins and says what changed.
pub fn execute(args: RestoreArgs) -> Result<(), CliError> {
    let config = args.host.config()?;
    let topology = read_topology(&config)?;
    let name = &args.domain;
    let scanned = scan(&config, &topology, Access::ReadWrite);
    let (mut libvirt, inventory) = match scanned {
        Ok((libvirt, inventory)) if inventory.vms.iter().any(|vm| &vm.name == name) => {
            (libvirt, inventory)
        }
        // Not a libvirt domain (or no libvirt at all): a QEMU behind a QMP socket?
        other => {
            let qmp = crate::inventory::qmp::scan(&config.qmp, &topology, &host_paths(&config));
            if let Some(vm) = qmp.vms.iter().find(|vm| &vm.name == name) {
                return restore_process(&config, vm);
            }
            let (libvirt, mut inventory) = other?;
            inventory.vms.extend(qmp.vms);
            return Err(find_vm(&inventory.vms, name, libvirt.uri())
                .err()
                .unwrap_or_else(|| CliError::NoSuchVm {
                    name: name.clone(),
                    uri: libvirt.uri().to_string(),
                    running: Vec::new(),
                }));
        }
    };
    let vm = find_vm(&inventory.vms, name, libvirt.uri())?;
    // By UUID: the VM just read, not another one re-created under its name meanwhile.
    let domain = crate::remediate::lookup(&mut libvirt, vm)?;
    let fixes = restore_fixes(&config, vm, Some(&domain));
    let pins = crate::remediate::restore(&domain, vm, config.policy.persistent, unix_now());
    finish(
        &config,
        vm,
        fixes,
        pins.map(|a| println!("{name}: {}", describe(&a))),
    )
}

/// Puts back the memory and interrupt fixes recorded for `vm`, printing each step.
fn restore_fixes(
    config: &Config,
    vm: &Vm,
    domain: Option<&dyn NumatuneCall>,
) -> Result<FixRestore, FixError> {
    let restored = fix_restore::restore(
        vm,
        &config.irq_proc_root,
        Path::new("/proc"),
        &config.qmp.state_dir,
        domain,
    )?;
    for step in &restored.done {
        println!("{}: {step}", vm.name);
    }
    Ok(restored)
}

/// The command's outcome from the fixes' restore and the pins' (either may have had
/// nothing to do, not both).
fn finish(
    config: &Config,
    vm: &Vm,
    fixes: Result<FixRestore, FixError>,
    pins: Result<(), RemediateError>,
) -> Result<(), CliError> {
    let fixes_done = match fixes {
        Ok(f) if !f.failed.is_empty() => {
            return Err(CliError::FixesNotRestored {
                domain: vm.name.clone(),
                failed: f.failed.join("; "),
            })
        }
        Ok(_) => true,
        Err(FixError::NothingToRestore { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    match pins {
        Err(RemediateError::NothingToRestore { .. }) if fixes_done => {}
        Err(e) => return Err(e.into()),
        Ok(()) => {}
    }
    cooldown_note(config, vm);
    Ok(())
}

/// Restores a QEMU without libvirt from its state file, then removes the file.
fn restore_process(config: &Config, vm: &Vm) -> Result<(), CliError> {
    let fixes = restore_fixes(config, vm, None);
    let process = ProcessVm::find(vm, &config.qmp.state_dir, Path::new("/proc"))?;
    let pins = crate::remediate::restore(&process, vm, false, unix_now()).and_then(|action| {
        state_file::remove(process.path()).map_err(RemediateError::from)?;
        println!("{}: {}", vm.name, describe(&action));
        println!("record {} removed", process.path().display());
        Ok(())
    });
    finish(config, vm, fixes, pins)
}

fn cooldown_note(config: &Config, vm: &Vm) {
    if vm.vmm != crate::inventory::Vmm::Libvirt {
        println!(
            "note: a daemon in enforce mode may repin it after policy.cooldown_seconds ({}s)",
            config.policy.cooldown_seconds
        );
    } else if vm.spec.policy.repin != Some(false) {
        println!(
            "note: a daemon in enforce mode may repin it after policy.cooldown_seconds ({}s); \
             opt the VM out with <pinsight:policy repin=\"off\"/> to keep these pins",
            config.policy.cooldown_seconds
        );
    }
}
