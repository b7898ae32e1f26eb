//! `pinsight plan`: what the repin policy in enforce mode would do now, and why; or, with
//! `--undo`, the pins a VM had before pinsight first acted on it; then the memory and
//! interrupt fixes (`plan_fixes`). Changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::Args;

use super::host::{lookup_vm, read_topology, scan, HostArgs};
use super::{fetch_status, print_json, render, CliError};
use crate::config::Config;
use crate::inventory::{Access, Inventory, Libvirt};
use crate::policy::{unix_now, Inputs, Policy};
use crate::topology::Topology;

/// Arguments of `pinsight plan`.
#[derive(Args, Debug)]
pub struct PlanArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// A running daemon (host:port) whose /status.json gives each vCPU's remote share; default
    /// the config's listen address. Without one, only the allowed-CPU rule decides.
    #[arg(long)]
    pub addr: Option<String>,
    /// Instead of a plan, show the pins DOMAIN had before pinsight first acted on it.
    #[arg(long, value_name = "DOMAIN")]
    pub undo: Option<String>,
}

/// Prints the plan (or the undo record of `--undo DOMAIN`).
pub fn execute(args: PlanArgs) -> Result<(), CliError> {
    let config = args.host.config()?;
    let topology = read_topology(&config)?;
    let (mut libvirt, inventory) = scan(&config, &topology, Access::ReadOnly)?;
    match &args.undo {
        Some(name) => undo(&mut libvirt, &inventory, name, args.json),
        None => plan(&config, &topology, &inventory, args.addr, args.json),
    }
}

fn plan(
    config: &Config,
    topology: &Topology,
    inventory: &Inventory,
    addr: Option<String>,
    json: bool,
) -> Result<(), CliError> {
    let addr = addr.unwrap_or_else(|| daemon_addr(config.listen));
    let daemon = fetch_status(&addr);
    let (ratios, source) = match &daemon {
        Ok(view) => (
            view.vcpu_remote_ratios(),
            format!("remote shares from the daemon at {addr}"),
        ),
        Err(e) => (
            BTreeMap::new(),
            format!("no remote shares ({e}): deciding by allowed CPUs alone"),
        ),
    };
    let (fixes, fixes_source) =
        super::plan_fixes::fix_plan(config, topology, inventory, daemon.as_ref().ok());
    // The decision is the same in every mode; only the daemon's loop acts on it.
    let plan = Policy::new(config.policy.clone()).evaluate(&Inputs {
        topology,
        vms: &inventory.vms,
        ratios: &ratios,
        now: unix_now(),
    });
    if json {
        print_json(&serde_json::json!({ "ratios": source, "plan": plan, "fixes": fixes }))
    } else {
        println!("What `enforce` would do now (nothing is changed); {source}.\n");
        print!("{}", render::plan(&plan));
        print!("{}", super::plan_fixes::render(&fixes, &fixes_source));
        Ok(())
    }
}

fn undo(
    libvirt: &mut Libvirt,
    inventory: &Inventory,
    name: &str,
    json: bool,
) -> Result<(), CliError> {
    let (vm, domain) = lookup_vm(libvirt, inventory, name)?;
    let record = crate::remediate::read_record(&domain, vm)?;
    let current: BTreeMap<_, _> = vm
        .vcpus
        .iter()
        .map(|t| (t.vcpu, t.allowed_cpus.clone()))
        .collect();
    if json {
        print_json(&serde_json::json!({ "domain": name, "record": record, "current": current }))
    } else {
        print!("{}", render::undo(name, &record, &current));
        Ok(())
    }
}

/// Where a daemon listening on `listen` is reached from this host: a wildcard address
/// (0.0.0.0, ::) is reached on loopback.
pub fn daemon_addr(mut listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        listen.set_ip([127, 0, 0, 1].into());
    }
    listen.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let addr = |s: &str| daemon_addr(s.parse().unwrap());
        assert_eq!(addr("0.0.0.0:9812"), "127.0.0.1:9812");
        assert_eq!(addr("[::]:9812"), "127.0.0.1:9812");
        assert_eq!(addr("10.0.0.5:9000"), "10.0.0.5:9000");
    }
}
