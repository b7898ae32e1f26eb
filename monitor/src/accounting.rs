//! Turns the probes' raw per-thread, per-CPU counters into per-VM and per-vCPU figures by
//! locality: cumulative run seconds, cross-socket moves, KVM exits, and the remote share over
//! a recent window. The share rules (what "remote ratio" means, the fallback when a window is
//! empty) live here and nowhere else.
//!
//! Works on deltas: each reading is compared with the previous one of the same thread, and
//! the difference is attributed to the locality of the CPU it ran on at that time. Totals
//! therefore stay monotonic across vCPU thread changes, never run ahead of the thread's real
//! run time ([`run_delta`]), and a GPU that moves changes only what is attributed from then on.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::AddAssign;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::inventory::Vm;
use crate::probes::exit_reasons;
use crate::probes::{Moves, ThreadCounters};
use crate::topology::{Locality, Topology};

mod run_delta;

/// One figure per locality relative to a VM's GPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ByLocality<T> {
    /// On a GPU's NUMA node.
    pub local: T,
    /// On another node of a GPU's socket.
    pub same_socket: T,
    /// On a socket without the VM's GPUs.
    pub remote: T,
    /// No GPU, or a CPU the topology does not describe.
    pub none: T,
}

impl<T: Copy> ByLocality<T> {
    /// The figure of `locality`.
    pub fn get(&self, locality: Locality) -> T {
        match locality {
            Locality::Local => self.local,
            Locality::SameSocket => self.same_socket,
            Locality::Remote => self.remote,
            Locality::None => self.none,
        }
    }

    /// The figure of `locality`, to change.
    pub fn get_mut(&mut self, locality: Locality) -> &mut T {
        match locality {
            Locality::Local => &mut self.local,
            Locality::SameSocket => &mut self.same_socket,
            Locality::Remote => &mut self.remote,
            Locality::None => &mut self.none,
        }
    }

    /// Every (locality, figure), in [`Locality::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Locality, T)> + '_ {
        Locality::ALL.into_iter().map(|l| (l, self.get(l)))
    }
}

impl<T: Copy + AddAssign> AddAssign for ByLocality<T> {
    fn add_assign(&mut self, other: Self) {
        for l in Locality::ALL {
            *self.get_mut(l) += other.get(l);
        }
    }
}

impl ByLocality<f64> {
    /// The sum over all localities.
    pub fn total(&self) -> f64 {
        self.local + self.same_socket + self.remote + self.none
    }

    /// Share of the time on the remote socket, among the time whose locality is known.
    pub fn remote_share(&self) -> Option<f64> {
        let known = self.local + self.same_socket + self.remote;
        (known > 0.0).then(|| self.remote / known)
    }

    /// Each locality's share of the total (all 0 when nothing ran).
    pub fn shares(&self) -> ByLocality<f64> {
        let total = self.total();
        let share = |x: f64| if total > 0.0 { x / total } else { 0.0 };
        ByLocality {
            local: share(self.local),
            same_socket: share(self.same_socket),
            remote: share(self.remote),
            none: share(self.none),
        }
    }

    /// What was added since `old` (never negative).
    fn since(&self, old: &ByLocality<f64>) -> ByLocality<f64> {
        let d = |new: f64, old: f64| (new - old).max(0.0);
        ByLocality {
            local: d(self.local, old.local),
            same_socket: d(self.same_socket, old.same_socket),
            remote: d(self.remote, old.remote),
            none: d(self.none, old.none),
        }
    }
}

/// Cumulative figures of one vCPU.
#[derive(Debug, Clone, Default)]
pub struct VcpuTotals {
    /// On-CPU seconds by locality.
    pub run_seconds: ByLocality<f64>,
    /// Moves from CPU to CPU, by scope (the socket scope is the cross-socket count).
    pub moves: Moves,
    /// KVM exits by (locality, reason label).
    pub exits: BTreeMap<(Locality, &'static str), u64>,
    /// Remote share of run time over the window (None: did not run, or no GPU).
    pub remote_ratio: Option<f64>,
    /// On-CPU seconds by CPU id since the previous reading: where it ran just now (the
    /// placement map draws it there).
    pub last_cpu_seconds: BTreeMap<u32, f64>,
}

/// Cumulative figures of one VM (the sum of its vCPUs, departed threads included).
#[derive(Debug, Clone, Default)]
pub struct DomainTotals {
    /// Per vCPU index.
    pub vcpus: BTreeMap<u32, VcpuTotals>,
    /// Remote share of the VM's run time over the window; for a VM with GPUs that did not
    /// run in the window, its share since pinsight started watching (0 if it never ran).
    /// None for a VM without GPUs.
    pub remote_ratio: Option<f64>,
}

impl DomainTotals {
    /// On-CPU seconds by locality, over all vCPUs.
    pub fn run_seconds(&self) -> ByLocality<f64> {
        let mut sum = ByLocality::default();
        for v in self.vcpus.values() {
            sum += v.run_seconds;
        }
        sum
    }

    /// KVM exits by locality over all vCPUs.
    pub fn exits_by_locality(&self) -> ByLocality<u64> {
        let mut sum = ByLocality::default();
        for v in self.vcpus.values() {
            for ((l, _), n) in &v.exits {
                *sum.get_mut(*l) += n;
            }
        }
        sum
    }
}

/// Run seconds of every (domain, vCPU) at one instant.
type RunSnapshot = BTreeMap<(String, u32), ByLocality<f64>>;

struct SeenThread {
    domain: String,
    vcpu: u32,
    last: ThreadCounters,
    /// Run time counted ahead (see [`run_delta`]), taken off what the thread adds next.
    owed_ns: u64,
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

    /// A new remote-ratio window (a reload); the readings kept so far stay.
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
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
        for totals in self.domains.values_mut() {
            for vcpu in totals.vcpus.values_mut() {
                vcpu.last_cpu_seconds.clear();
            }
        }
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
                        owed_ns: 0,
                    });
                let vcpu = totals.vcpus.entry(seen.vcpu).or_default();
                apply_delta(
                    vcpu,
                    &seen.last,
                    current,
                    &mut seen.owed_ns,
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
        let Some(mut seen) = self.threads.remove(&tid) else {
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
                &mut seen.owed_ns,
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
            let mut domain_delta = ByLocality::default();
            for (vcpu, totals) in domain.vcpus.iter_mut() {
                let key = (name.clone(), *vcpu);
                let new = newest.get(&key).copied().unwrap_or_default();
                let old = oldest.get(&key).copied().unwrap_or_default();
                let delta = new.since(&old);
                domain_delta += delta;
                totals.remote_ratio = if has_gpu { delta.remote_share() } else { None };
            }
            // A VM with GPUs always has a ratio: idle in the window, it keeps the share of
            // all the time it ran (0 if it never ran), so its series does not come and go.
            let since_start = domain.run_seconds().remote_share();
            domain.remote_ratio =
                has_gpu.then(|| domain_delta.remote_share().or(since_start).unwrap_or(0.0));
        }
    }
}

fn apply_delta(
    vcpu: &mut VcpuTotals,
    last: &ThreadCounters,
    current: &ThreadCounters,
    owed_ns: &mut u64,
    topology: &Topology,
    gpu_nodes: &[u32],
    exit_source: &str,
) {
    let deltas = run_delta::run_deltas(&last.run_ns_by_cpu, &current.run_ns_by_cpu, owed_ns);
    for (cpu, delta) in deltas.into_iter().enumerate() {
        if delta > 0 {
            let locality = topology.locality(cpu as u32, gpu_nodes);
            *vcpu.run_seconds.get_mut(locality) += delta as f64 / 1e9;
            *vcpu.last_cpu_seconds.entry(cpu as u32).or_default() += delta as f64 / 1e9;
        }
    }
    vcpu.moves.add_since(&last.moves, &current.moves);
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
