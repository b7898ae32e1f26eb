//! Decisions over the fixture topologies (tests/fixtures/sysfs): where vCPUs go (two sockets,
//! SMT, SNC, a full node, reserved CPUs) and the guard rails (thresholds and hysteresis,
//! cooldown, rate limit, opt-out, orchestrator, unreadable state).

mod fixes;
mod guards;
mod operator;
mod placement;

pub(super) use std::collections::BTreeMap;

pub(super) use super::*;
pub(super) use crate::config::PolicyConfig;
pub(super) use crate::inventory::domain_xml::NovaInfo;

pub(super) const NOW: f64 = 1_764_055_200.0;

pub(super) use crate::test_support::{cpus, topo};

/// A VM whose vCPU i may run on `allowed[i]`, with GPUs on `gpu_nodes`.
pub(super) fn vm(name: &str, gpu_nodes: &[u32], allowed: &[&str]) -> Vm {
    crate::test_support::VmBuilder::new(name)
        .vcpus(allowed)
        .gpu_nodes(gpu_nodes)
        .build()
}

pub(super) fn config() -> PolicyConfig {
    PolicyConfig::default()
}

pub(super) fn eval_at(
    policy: &mut Policy,
    t: &Topology,
    vms: &[Vm],
    ratios: &[(&str, u32, f64)],
    now: f64,
) -> Plan {
    let ratios: BTreeMap<(String, u32), f64> = ratios
        .iter()
        .map(|(d, v, r)| ((d.to_string(), *v), *r))
        .collect();
    policy.evaluate(&Inputs {
        topology: t,
        vms,
        ratios: &ratios,
        now,
    })
}

pub(super) fn eval(config: PolicyConfig, t: &Topology, vms: &[Vm]) -> Plan {
    eval_at(&mut Policy::new(config), t, vms, &[], NOW)
}

pub(super) fn decision<'a>(plan: &'a Plan, domain: &str) -> &'a VmDecision {
    plan.decisions
        .iter()
        .find(|d| d.domain == domain)
        .unwrap_or_else(|| panic!("no decision for {domain} in {plan:#?}"))
}

pub(super) fn after(d: &VmDecision) -> Vec<String> {
    d.vcpus
        .iter()
        .map(|m| m.after.as_ref().map_or("-".into(), |a| a.to_string()))
        .collect()
}
