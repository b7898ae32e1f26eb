//! Where a VM's misplaced vCPUs can go: CPUs of the GPU's node(s) that are not reserved and
//! not already full of pinned vCPUs, on whole SMT cores where possible.
//!
//! Load model: a vCPU pinned to k CPUs counts 1/k on each of them (it can only run on those);
//! a vCPU allowed on every online CPU is unpinned and counts nowhere (the scheduler places it,
//! so it claims no CPU). A CPU takes vCPUs up to `max_oversubscription`.

use std::collections::BTreeMap;

use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::topology::Topology;

/// Slack for sums of fractions (1/3 + 1/3 + 1/3 must fit in 1).
const EPS: f64 = 1e-9;

/// Pinned vCPU load per CPU, by domain.
#[derive(Debug, Clone, Default)]
pub struct Load {
    per_cpu: BTreeMap<u32, BTreeMap<String, f64>>,
}

impl Load {
    /// The load of every pinned vCPU of `vms`.
    pub fn of(vms: &[Vm], topology: &Topology) -> Load {
        let online: CpuSet = topology.cpus.keys().copied().collect();
        let mut load = Load::default();
        for vm in vms {
            for t in &vm.vcpus {
                let allowed = t.allowed_cpus.intersection(&online);
                if !allowed.is_empty() && allowed != online {
                    load.add(&vm.name, &allowed, 1.0);
                }
            }
        }
        load
    }

    /// Adds `vcpus` vCPUs of `domain` spread over `cpus`.
    pub fn add(&mut self, domain: &str, cpus: &CpuSet, vcpus: f64) {
        if cpus.is_empty() {
            return;
        }
        let share = vcpus / cpus.len() as f64;
        for cpu in cpus.iter() {
            *self
                .per_cpu
                .entry(cpu)
                .or_default()
                .entry(domain.to_string())
                .or_default() += share;
        }
    }

    /// Takes away one vCPU of `domain` that was spread over `cpus` (it is being moved).
    pub fn remove(&mut self, domain: &str, cpus: &CpuSet, online: &CpuSet) {
        let allowed = cpus.intersection(online);
        if !allowed.is_empty() && &allowed != online {
            self.add(domain, &allowed, -1.0);
        }
    }

    /// Pinned vCPUs on `cpu`, all domains.
    pub fn on(&self, cpu: u32) -> f64 {
        self.per_cpu
            .get(&cpu)
            .map_or(0.0, |d| d.values().sum::<f64>().max(0.0))
    }

    /// Pinned vCPUs of domains other than `domain` on `cpu`.
    pub fn foreign(&self, cpu: u32, domain: &str) -> f64 {
        self.per_cpu.get(&cpu).map_or(0.0, |d| {
            d.iter()
                .filter(|(name, _)| name.as_str() != domain)
                .map(|(_, x)| *x)
                .sum::<f64>()
                .max(0.0)
        })
    }
}

/// How a target set is chosen.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    /// CPUs never used.
    pub reserved: &'a CpuSet,
    /// Most vCPUs per CPU.
    pub max_oversubscription: f64,
    /// Take whole SMT cores.
    pub keep_smt_cores: bool,
}

/// Where the vCPUs go.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The CPUs every moved vCPU is pinned to.
    pub cpus: CpuSet,
    /// false: on the GPU's node(s); true: another node of a GPU's socket (SNC / NPS hosts),
    /// because the GPU's own node(s) had no room.
    pub same_socket_fallback: bool,
}

/// Why there is no target.
#[derive(Debug, Clone, PartialEq)]
pub struct NoRoom {
    /// CPUs of the GPU's node(s) (before the reserve).
    pub node_cpus: CpuSet,
    /// Of those, the reserved ones.
    pub reserved: CpuSet,
    /// Pinned vCPUs on the usable ones.
    pub load: f64,
    /// What they can take.
    pub capacity: f64,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.node_cpus.is_empty() {
            return write!(f, "the GPU's node has no online CPUs");
        }
        write!(f, "GPU node CPUs {}", self.node_cpus)?;
        if !self.reserved.is_empty() {
            write!(f, " ({} reserved)", self.reserved)?;
        }
        write!(
            f,
            " hold {:.2} pinned vCPUs of {:.2} allowed (max_oversubscription)",
            self.load, self.capacity
        )
    }
}

/// Chooses CPUs for `n` vCPUs of `domain` whose GPUs sit on `gpu_nodes`. Tries the GPU's
/// node(s) first, then the rest of the GPU's socket(s).
pub fn choose(
    topology: &Topology,
    gpu_nodes: &[u32],
    n: usize,
    domain: &str,
    load: &Load,
    rules: &Rules,
) -> Result<Target, NoRoom> {
    let node_cpus = topology.node_cpus(gpu_nodes);
    let sockets: Vec<u32> = gpu_nodes
        .iter()
        .filter_map(|&node| topology.socket_of_node(node))
        .collect();
    let socket_cpus: CpuSet = topology
        .cpus
        .values()
        .filter(|c| sockets.contains(&c.socket))
        .map(|c| c.id)
        .collect();
    let tiers = [
        (node_cpus.clone(), false),
        (socket_cpus.difference(&node_cpus), true),
    ];
    for (tier, fallback) in tiers {
        let usable = tier.difference(rules.reserved);
        if let Some(cpus) = fit(topology, &usable, n, domain, load, rules) {
            return Ok(Target {
                cpus,
                same_socket_fallback: fallback,
            });
        }
    }
    let usable = node_cpus.difference(rules.reserved);
    Err(NoRoom {
        reserved: node_cpus.intersection(rules.reserved),
        load: usable.iter().map(|c| load.on(c)).sum(),
        capacity: usable.len() as f64 * rules.max_oversubscription,
        node_cpus,
    })
}

/// The first set, in order of preference, on which `n` more vCPUs spread evenly keep every
/// CPU within `max_oversubscription`, preferring one CPU per vCPU.
fn fit(
    topology: &Topology,
    usable: &CpuSet,
    n: usize,
    domain: &str,
    load: &Load,
    rules: &Rules,
) -> Option<CpuSet> {
    if usable.is_empty() || n == 0 {
        return None;
    }
    // Groups taken together: a core's usable siblings, or single CPUs.
    let mut groups: Vec<CpuSet> = Vec::new();
    for cpu in usable.iter() {
        let group = match topology.cpus.get(&cpu) {
            Some(c) if rules.keep_smt_cores => c.siblings.intersection(usable),
            _ => CpuSet::from_iter([cpu]),
        };
        if !groups.contains(&group) {
            groups.push(group);
        }
    }
    let sum = |g: &CpuSet, f: &dyn Fn(u32) -> f64| g.iter().map(f).sum::<f64>();
    // Cores no other VM uses first (SMT neighbours share L1 and, under L1TF, leak), then the
    // least loaded; ties by lowest CPU for a stable plan.
    groups.sort_by(|a, b| {
        let key = |g: &CpuSet| {
            (
                sum(g, &|c| load.foreign(c, domain)) > EPS,
                sum(g, &|c| load.on(c)),
                g.iter().next(),
            )
        };
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
    });
    let mut picked = CpuSet::new();
    let mut fallback: Option<CpuSet> = None;
    for group in groups {
        for cpu in group.iter() {
            // A full CPU only makes the spread worse.
            if load.on(cpu) + EPS < rules.max_oversubscription {
                picked.insert(cpu);
            }
        }
        if picked.is_empty() {
            continue;
        }
        let share = n as f64 / picked.len() as f64;
        let fits = picked
            .iter()
            .all(|c| load.on(c) + share <= rules.max_oversubscription + EPS);
        if fits && picked.len() >= n {
            return Some(picked);
        }
        if fits && fallback.is_none() {
            // Oversubscribed within the limit; keep looking for a set with a CPU per vCPU.
            fallback = Some(picked.clone());
        }
    }
    fallback
}
