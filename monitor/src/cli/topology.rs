//! `pinsight topology`: sockets, NUMA nodes, GPUs and every VM's vCPU threads with the CPUs
//! they may use. Reads the host directly; no daemon needed.

use clap::Args;
use serde::Serialize;

use super::host::{read_topology, HostArgs};
use super::{print_json, render, CliError};
use crate::inventory::{Access, Inventory};
use crate::topology::Topology;

/// Arguments of `pinsight topology`.
#[derive(Args, Debug)]
pub struct TopologyArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `pinsight topology --json` prints.
#[derive(Debug, Serialize)]
pub struct TopologyReport<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// VMs, or None when libvirt was not reachable.
    pub inventory: Option<&'a Inventory>,
    /// Why libvirt was not reachable.
    pub libvirt_error: Option<String>,
}

/// Prints the host's topology and VMs; an unreachable libvirt is shown, not fatal.
pub fn execute(args: TopologyArgs) -> Result<(), CliError> {
    let config = args.host.config()?;
    let topology = read_topology(&config)?;
    let inventory = super::host::scan_inventory(&config, &topology, Access::ReadOnly);
    if args.json {
        print_json(&TopologyReport {
            topology: &topology,
            inventory: inventory.as_ref().ok(),
            libvirt_error: inventory.as_ref().err().map(ToString::to_string),
        })
    } else {
        print!("{}", render::topology(&topology, inventory.as_ref()));
        Ok(())
    }
}
