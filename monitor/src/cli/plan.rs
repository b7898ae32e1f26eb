//! `pinsight plan`: what the repin policy in enforce mode would do now, and why; or, with
//! `--undo`, the pins a VM had before pinsight first acted on it. Changes nothing.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use clap::Args;

use super::host::{lookup_vm, read_topology, scan, HostArgs};
use super::{fetch_status, print_json, render, CliError};
use crate::config::Config;
use crate::inventory::{Inventory, Libvirt};
use crate::policy::{unix_now, Inputs, Policy};
use crate::status::HostStatus;
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
    let (mut libvirt, inventory) = scan(&config, &topology)?;
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
    let (ratios, source) = match fetch_status(&addr) {
        Ok(status) => (
            remote_ratios(&status),
            format!("remote shares from the daemon at {addr}"),
        ),
        Err(e) => (
            BTreeMap::new(),
            format!("no remote shares ({e}): deciding by allowed CPUs alone"),
        ),
    };
    // The decision is the same in every mode; only the daemon's loop acts on it.
    let plan = Policy::new(config.policy.clone()).evaluate(&Inputs {
        topology,
        vms: &inventory.vms,
        ratios: &ratios,
        now: unix_now(),
    });
    if json {
        print_json(&serde_json::json!({ "ratios": source, "plan": plan }))
    } else {
        println!("What `enforce` would do now (nothing is changed); {source}.\n");
        print!("{}", render::plan(&plan));
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
    let record = crate::remediate::read_record(&domain, name)?;
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

/// Each vCPU's remote share over the window, by (domain, vCPU), from a daemon's status;
/// vCPUs without a reading (idle, or just started) are left out, as the policy expects.
pub fn remote_ratios(status: &HostStatus) -> BTreeMap<(String, u32), f64> {
    status
        .vms
        .iter()
        .flat_map(|vm| {
            vm.vcpus
                .iter()
                .filter_map(|v| Some(((vm.domain.clone(), v.vcpu), v.remote_ratio?)))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_ratios_keep_every_vcpu_with_a_reading() {
        // The shape of /status.json, as the daemon serves it (only the fields read here vary).
        let vcpu = |vcpu: u32, ratio: Option<f64>| {
            serde_json::json!({
                "vcpu": vcpu, "tid": 100 + vcpu, "allowed_cpus": "0-1",
                "allowed_on_wrong_socket": false, "run_seconds": 1.0,
                "shares": { "local": 0.0, "same_socket": 0.0, "remote": 0.0, "none": 0.0 },
                "remote_ratio": ratio, "cross_socket_migrations": 0
            })
        };
        let vm = |domain: &str, vcpus: Vec<serde_json::Value>| {
            serde_json::json!({
                "domain": domain, "uuid": "u", "gpus": [], "gpu_nodes": [1], "run_seconds": 1.0,
                "shares": { "local": 0.0, "same_socket": 0.0, "remote": 0.0, "none": 0.0 },
                "remote_ratio": null, "vcpus": vcpus
            })
        };
        let status: HostStatus = serde_json::from_value(serde_json::json!({
            "version": "1", "libvirt_up": true, "probes": {}, "problems": [],
            "vms": [
                vm("a", vec![vcpu(0, Some(0.75)), vcpu(1, None)]),
                vm("b", vec![vcpu(0, Some(0.0))]),
                vm("idle", vec![]),
            ]
        }))
        .unwrap();
        assert_eq!(
            remote_ratios(&status),
            BTreeMap::from([(("a".into(), 0), 0.75), (("b".into(), 0), 0.0)])
        );
        assert!(remote_ratios(&HostStatus::default()).is_empty());
    }

    #[test]
    fn a_wildcard_listen_address_is_reached_on_loopback() {
        let addr = |s: &str| daemon_addr(s.parse().unwrap());
        assert_eq!(addr("0.0.0.0:9812"), "127.0.0.1:9812");
        assert_eq!(addr("[::]:9812"), "127.0.0.1:9812");
        assert_eq!(addr("10.0.0.5:9000"), "10.0.0.5:9000");
    }
}
