//! `pinsight restore`: puts back, live, the pins a VM had before pinsight first acted on it,
//! and records that in its state metadata.

use clap::Args;

use super::host::{find_vm, read_topology, scan, HostArgs};
use super::CliError;
use crate::inventory::Access;
use crate::policy::record::describe;
use crate::policy::unix_now;

/// Arguments of `pinsight restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// The libvirt domain name.
    pub domain: String,
}

/// Restores the VM's original pins and says what changed.
pub fn execute(args: RestoreArgs) -> Result<(), CliError> {
    let config = args.host.config()?;
    let topology = read_topology(&config)?;
    let (mut libvirt, inventory) = scan(&config, &topology, Access::ReadWrite)?;
    let name = &args.domain;
    let vm = find_vm(&inventory.vms, name, libvirt.uri())?;
    // By UUID: the VM just read, not another one re-created under its name meanwhile.
    let domain = crate::remediate::lookup(&mut libvirt, vm)?;
    let action = crate::remediate::restore(&domain, vm, config.policy.persistent, unix_now())?;
    println!("{name}: {}", describe(&action));
    if vm.spec.policy.repin != Some(false) {
        println!(
            "note: a daemon in enforce mode may repin it after policy.cooldown_seconds ({}s); \
             opt the VM out with <pinsight:policy repin=\"off\"/> to keep these pins",
            config.policy.cooldown_seconds
        );
    }
    Ok(())
}
