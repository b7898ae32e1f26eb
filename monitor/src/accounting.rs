//! Turns the probes' raw per-thread, per-CPU counters into per-VM and per-vCPU figures by
//! locality: cumulative run seconds, cross-socket moves, KVM exits, and the remote share over
//! a recent window.
//!
//! Works on deltas: each reading is compared with the previous one of the same thread, and
//! the difference is attributed to the locality of the CPU it ran on at that time. Totals
//! therefore stay monotonic across vCPU thread changes, and a GPU that moves changes only
//! what is attributed from then on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::inventory::Vm;
use crate::probes::exit_reasons;
use crate::probes::ThreadCounters;
use crate::topology::{Locality, Topology};

/// Index of a locality in the per-locality arrays.
fn idx(l: Locality) -> usize {
    match l {
        Locality::Local => 0,
        Locality::SameSocket => 1,
        Locality::Remote => 2,
        Locality::None => 3,
    }
}

/// Run seconds by locality, indexed like [`Locality::ALL`].
pub type ByLocality = [f64; 4];

/// Cumulative figures of one vCPU.
#[derive(Debug, Clone, Default)]
pub struct VcpuTotals {
    /// On-CPU seconds by locality.
    pub run_seconds: ByLocality,
    /// Moves between sockets.
    pub cross_socket_migrations: u64,
    /// KVM exits by (locality, reason label).
    pub exits: BTreeMap<(Locality, &'static str), u64>,
    /// Remote share of run time over the window (None: did not run, or no GPU).
    pub remote_ratio: Option<f64>,
}

/// Cumulative figures of one VM (the sum of its vCPUs, departed threads included).
#[derive(Debug, Clone, Default)]
pub struct DomainTotals {
    /// Per vCPU index.
    pub vcpus: BTreeMap<u32, VcpuTotals>,
    /// Remote share of the VM's run time over the window.
    pub remote_ratio: Option<f64>,
}

impl DomainTotals {
    /// On-CPU seconds by locality, over all vCPUs.
    pub fn run_seconds(&self) -> ByLocality {
        let mut sum = [0.0; 4];
        for v in self.vcpus.values() {
            for (s, x) in sum.iter_mut().zip(v.run_seconds) {
                *s += x;
            }
        }
        sum
    }

    /// KVM exits by locality over all vCPUs.
    pub fn exits_by_locality(&self) -> [u64; 4] {
        let mut sum = [0; 4];
        for v in self.vcpus.values() {
            for ((l, _), n) in &v.exits {
                sum[idx(*l)] += n;
            }
        }
        sum
    }
}

/// Share of `run` on the remote socket, among the time whose locality is known.
pub fn remote_share(run: &ByLocality) -> Option<f64> {
    let known = run[0] + run[1] + run[2];
    (known > 0.0).then(|| run[idx(Locality::Remote)] / known)
}

/// Run seconds of every (domain, vCPU) at one instant.
type RunSnapshot = BTreeMap<(String, u32), ByLocality>;

struct SeenThread {
    domain: String,
    vcpu: u32,
    last: ThreadCounters,
}

/// The accounting state the daemon keeps between readings.
pub struct Accounting {
    window: Duration,
    threads: HashMap<u32, SeenThread>,
    domains: BTreeMap<String, DomainTotals>,
    /// Snapshots of per-vCPU run seconds, oldest first, for the windowed ratios.
    history: VecDeque<(Instant, RunSnapshot)>,
    exit_source: &'static str,
}

impl Accounting {
    /// Empty accounting with a remote-ratio window of `window`.
    pub fn new(window: Duration, exit_source: Option<&'static str>) -> Self {
        Accounting {
            window,
            threads: HashMap::new(),
            domains: BTreeMap::new(),
            history: VecDeque::new(),
            exit_source: exit_source.unwrap_or("kvm_exit"),
        }
    }

    /// Totals per domain name.
    pub fn domains(&self) -> &BTreeMap<String, DomainTotals> {
        &self.domains
    }

    /// Applies a reading of every tracked thread. `vms` is the current inventory: domains not
    /// in it are dropped (their series end), threads are matched to their VM and vCPU.
    pub fn update(
        &mut self,
        now: Instant,
        vms: &[Vm],
        counters: &BTreeMap<u32, ThreadCounters>,
        topology: &Topology,
    ) {
        self.domains
            .retain(|name, _| vms.iter().any(|vm| &vm.name == name));
        for vm in vms {
            let totals = self.domains.entry(vm.name.clone()).or_default();
            for thread in &vm.vcpus {
                totals.vcpus.entry(thread.vcpu).or_default();
                let Some(current) = counters.get(&thread.tid) else {
                    continue;
                };
                let seen = self
                    .threads
                    .entry(thread.tid)
                    .or_insert_with(|| SeenThread {
                        domain: vm.name.clone(),
                        vcpu: thread.vcpu,
                        last: ThreadCounters::default(),
                    });
                let vcpu = totals.vcpus.entry(seen.vcpu).or_default();
                apply_delta(
                    vcpu,
                    &seen.last,
                    current,
                    topology,
                    &vm.gpu_nodes,
                    self.exit_source,
                );
                seen.last = current.clone();
            }
        }
        self.threads.retain(|tid, seen| {
            counters.contains_key(tid) && vms.iter().any(|vm| vm.name == seen.domain)
        });
        self.update_ratios(now, vms);
    }

    /// Folds the final counters of a thread that is no longer tracked.
    pub fn retire(&mut self, tid: u32, last: &ThreadCounters, vms: &[Vm], topology: &Topology) {
        let Some(seen) = self.threads.remove(&tid) else {
            return;
        };
        let Some(vm) = vms.iter().find(|vm| vm.name == seen.domain) else {
            return;
        };
        if let Some(vcpu) = self
            .domains
            .get_mut(&seen.domain)
            .and_then(|d| d.vcpus.get_mut(&seen.vcpu))
        {
            apply_delta(
                vcpu,
                &seen.last,
                last,
                topology,
                &vm.gpu_nodes,
                self.exit_source,
            );
        }
    }

    fn update_ratios(&mut self, now: Instant, vms: &[Vm]) {
        let snapshot: RunSnapshot = self
            .domains
            .iter()
            .flat_map(|(name, d)| {
                d.vcpus
                    .iter()
                    .map(move |(vcpu, t)| ((name.clone(), *vcpu), t.run_seconds))
            })
            .collect();
        self.history.push_back((now, snapshot));
        // Keep the newest snapshot that is at least `window` old as the baseline.
        while self.history.len() > 2 && now.duration_since(self.history[1].0) >= self.window {
            self.history.pop_front();
        }
        let (Some((_, oldest)), Some((_, newest))) = (self.history.front(), self.history.back())
        else {
            return;
        };
        for (name, domain) in self.domains.iter_mut() {
            let has_gpu = vms
                .iter()
                .any(|vm| &vm.name == name && !vm.gpu_nodes.is_empty());
            let mut domain_delta = [0.0; 4];
            for (vcpu, totals) in domain.vcpus.iter_mut() {
                let key = (name.clone(), *vcpu);
                let new = newest.get(&key).copied().unwrap_or_default();
                let old = oldest.get(&key).copied().unwrap_or_default();
                let delta: ByLocality = std::array::from_fn(|i| (new[i] - old[i]).max(0.0));
                for (d, x) in domain_delta.iter_mut().zip(delta) {
                    *d += x;
                }
                totals.remote_ratio = if has_gpu { remote_share(&delta) } else { None };
            }
            domain.remote_ratio = if has_gpu {
                remote_share(&domain_delta)
            } else {
                None
            };
        }
    }
}

fn apply_delta(
    vcpu: &mut VcpuTotals,
    last: &ThreadCounters,
    current: &ThreadCounters,
    topology: &Topology,
    gpu_nodes: &[u32],
    exit_source: &str,
) {
    for (cpu, now_ns) in current.run_ns_by_cpu.iter().enumerate() {
        let before = last.run_ns_by_cpu.get(cpu).copied().unwrap_or(0);
        let delta = now_ns.saturating_sub(before);
        if delta > 0 {
            let locality = topology.locality(cpu as u32, gpu_nodes);
            vcpu.run_seconds[idx(locality)] += delta as f64 / 1e9;
        }
    }
    vcpu.cross_socket_migrations += current
        .cross_socket_migrations
        .saturating_sub(last.cross_socket_migrations);
    for (reason, per_cpu) in &current.exits {
        let label = exit_reasons::name(exit_source, *reason);
        let before = last.exits.get(reason);
        for (cpu, n) in per_cpu.iter().enumerate() {
            let delta = n.saturating_sub(before.and_then(|b| b.get(cpu).copied()).unwrap_or(0));
            if delta > 0 {
                let locality = topology.locality(cpu as u32, gpu_nodes);
                *vcpu.exits.entry((locality, label)).or_default() += delta;
            }
        }
    }
}
