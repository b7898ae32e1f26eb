//! Turns the probes' raw per-thread, per-CPU counters into per-VM and per-vCPU figures by
//! locality: cumulative run seconds (of the vCPUs, and of the QEMU process's other threads by
//! role), moves, KVM exits, and the remote share over a recent window. The share rules (what
//! "remote ratio" means, the fallback when a window is empty) live here and nowhere else.
//!
//! Works on deltas: each reading is compared with the previous one of the same thread, and
//! the difference is attributed to the locality of the CPU it ran on at that time. Totals
//! therefore stay monotonic across vCPU thread changes, never run ahead of the thread's real
//! run time ([`run_delta`]), and a GPU that moves changes only what is attributed from then on.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::inventory::{ThreadRole, Vm};
use crate::probes::exit_reasons;
use crate::probes::{Moves, ThreadCounters};
use crate::topology::{CpuLocalities, Locality, Topology};

mod by_locality;
mod run_delta;
#[cfg(test)]
mod tests;

pub use by_locality::ByLocality;

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
    /// On-CPU seconds by locality of the QEMU process's other threads, by role (never
    /// [`ThreadRole::Vcpu`]: those are in `vcpus`).
    pub roles: BTreeMap<ThreadRole, ByLocality<f64>>,
    /// Remote share of the VM's run time over the window; for a VM with GPUs that did not
    /// run in the window, its share since pinsight started watching (0 if it never ran).
    /// None for a VM without GPUs.
    pub remote_ratio: Option<f64>,
    /// The same share for the threads that feed the devices from the host side (emulator
    /// and IOThreads); None without GPUs or when they never ran.
    pub emulator_remote_ratio: Option<f64>,
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

    /// On-CPU seconds by locality of every role, vCPUs included; every role is present.
    pub fn run_seconds_by_role(&self) -> BTreeMap<ThreadRole, ByLocality<f64>> {
        ThreadRole::ALL
            .into_iter()
            .map(|role| {
                let seconds = match role {
                    ThreadRole::Vcpu => self.run_seconds(),
                    _ => self.roles.get(&role).copied().unwrap_or_default(),
                };
                (role, seconds)
            })
            .collect()
    }

    /// On-CPU seconds by locality of the emulator and IOThreads together.
    fn emulator_run_seconds(&self) -> ByLocality<f64> {
        let mut sum = ByLocality::default();
        for role in EMULATOR_ROLES {
            sum += self.roles.get(&role).copied().unwrap_or_default();
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

/// The roles whose remote share is [`DomainTotals::emulator_remote_ratio`].
const EMULATOR_ROLES: [ThreadRole; 2] = [ThreadRole::Emulator, ThreadRole::Iothread];

/// Whose run time a thread's counters are: a vCPU's, or a role's of the QEMU process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Owner {
    Vcpu(u32),
    Role(ThreadRole),
}

/// A domain's run seconds at one instant, as much as the windowed shares need: each vCPU's
/// (sorted by index) and its emulator and IOThreads' together. A window's worth of these is
/// kept (one per tick: 60 x 100 VMs by default), so they are small and dense.
#[derive(Default)]
struct DomainSnapshot {
    vcpus: Vec<(u32, RemoteOfKnown)>,
    emulator: RemoteOfKnown,
}

/// Run seconds on the remote socket, and of known locality (the parts of
/// [`ByLocality::remote_share`]).
#[derive(Debug, Clone, Copy, Default)]
struct RemoteOfKnown {
    remote: f64,
    known: f64,
}

impl RemoteOfKnown {
    fn of(seconds: &ByLocality<f64>) -> Self {
        RemoteOfKnown {
            remote: seconds.remote,
            known: seconds.known(),
        }
    }

    /// The share over what was added since `old` (None: nothing of known locality).
    fn share_since(&self, old: &RemoteOfKnown) -> Option<f64> {
        by_locality::remote_share_of(
            (self.remote - old.remote).max(0.0),
            (self.known - old.known).max(0.0),
        )
    }
}

impl std::ops::AddAssign for RemoteOfKnown {
    fn add_assign(&mut self, other: Self) {
        self.remote += other.remote;
        self.known += other.known;
    }
}

/// Every domain's [`DomainSnapshot`] at one instant.
type RunSnapshot = BTreeMap<String, DomainSnapshot>;

struct SeenThread {
    domain: String,
    owner: Owner,
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
        let names: BTreeSet<&str> = vms.iter().map(|vm| vm.name.as_str()).collect();
        self.domains.retain(|name, _| names.contains(name.as_str()));
        for totals in self.domains.values_mut() {
            for vcpu in totals.vcpus.values_mut() {
                vcpu.last_cpu_seconds.clear();
            }
        }
        for vm in vms {
            let totals = self.domains.entry(vm.name.clone()).or_default();
            for thread in &vm.vcpus {
                totals.vcpus.entry(thread.vcpu).or_default();
            }
            // Where each CPU is for this VM's GPUs, worked out once for all its threads.
            let localities = topology.localities(&vm.gpu_nodes);
            let vcpus = vm.vcpus.iter().map(|t| (t.tid, Owner::Vcpu(t.vcpu)));
            let others = vm.threads.iter().map(|t| (t.tid, Owner::Role(t.role)));
            for (tid, owner) in vcpus.chain(others) {
                let Some(current) = counters.get(&tid) else {
                    continue;
                };
                let seen = self.threads.entry(tid).or_insert_with(|| SeenThread {
                    domain: vm.name.clone(),
                    owner,
                    last: ThreadCounters::default(),
                    owed_ns: 0,
                });
                totals.apply(seen, current, &localities, self.exit_source);
                seen.last.keep(current);
            }
        }
        self.threads
            .retain(|tid, seen| counters.contains_key(tid) && names.contains(seen.domain.as_str()));
        let with_gpus: BTreeSet<&str> = vms
            .iter()
            .filter(|vm| !vm.gpu_nodes.is_empty())
            .map(|vm| vm.name.as_str())
            .collect();
        self.update_ratios(now, &with_gpus);
    }

    /// Folds the final counters of a thread that is no longer tracked.
    pub fn retire(&mut self, tid: u32, last: &ThreadCounters, vms: &[Vm], topology: &Topology) {
        let Some(mut seen) = self.threads.remove(&tid) else {
            return;
        };
        let Some(vm) = vms.iter().find(|vm| vm.name == seen.domain) else {
            return;
        };
        if let Some(totals) = self.domains.get_mut(&seen.domain) {
            let localities = topology.localities(&vm.gpu_nodes);
            totals.apply(&mut seen, last, &localities, self.exit_source);
        }
    }

    /// The windowed remote shares; `with_gpus` names the VMs that have GPUs.
    fn update_ratios(&mut self, now: Instant, with_gpus: &BTreeSet<&str>) {
        let snapshot: RunSnapshot = self
            .domains
            .iter()
            .map(|(name, d)| {
                let vcpus = d
                    .vcpus
                    .iter()
                    .map(|(vcpu, t)| (*vcpu, RemoteOfKnown::of(&t.run_seconds)))
                    .collect();
                let emulator = RemoteOfKnown::of(&d.emulator_run_seconds());
                (name.clone(), DomainSnapshot { vcpus, emulator })
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
        let none = DomainSnapshot::default();
        for (name, domain) in self.domains.iter_mut() {
            let has_gpu = with_gpus.contains(name.as_str());
            let newest = newest.get(name).unwrap_or(&none);
            let oldest = oldest.get(name).unwrap_or(&none);
            // A vCPU new since the baseline counts from zero there.
            let at = |s: &DomainSnapshot, vcpu: u32| {
                let i = s.vcpus.binary_search_by_key(&vcpu, |(v, _)| *v).ok();
                i.map(|i| s.vcpus[i].1).unwrap_or_default()
            };
            let mut domain_new = RemoteOfKnown::default();
            let mut domain_old = RemoteOfKnown::default();
            for (vcpu, totals) in domain.vcpus.iter_mut() {
                let (new, old) = (at(newest, *vcpu), at(oldest, *vcpu));
                domain_new += new;
                domain_old += old;
                totals.remote_ratio = if has_gpu { new.share_since(&old) } else { None };
            }
            // A VM with GPUs always has a ratio: idle in the window, it keeps the share of
            // all the time it ran (0 if it never ran), so its series does not come and go.
            let since_start = domain.run_seconds().remote_share();
            domain.remote_ratio = has_gpu.then(|| {
                domain_new
                    .share_since(&domain_old)
                    .or(since_start)
                    .unwrap_or(0.0)
            });
            let since_start = domain.emulator_run_seconds().remote_share();
            domain.emulator_remote_ratio = has_gpu
                .then(|| {
                    newest
                        .emulator
                        .share_since(&oldest.emulator)
                        .or(since_start)
                })
                .flatten();
        }
    }
}

impl DomainTotals {
    /// Adds what thread `seen` did between its last reading and `current` to its owner.
    fn apply(
        &mut self,
        seen: &mut SeenThread,
        current: &ThreadCounters,
        localities: &CpuLocalities,
        exit_source: &str,
    ) {
        let deltas = run_delta::run_deltas(
            &seen.last.run_ns_by_cpu,
            &current.run_ns_by_cpu,
            &mut seen.owed_ns,
        );
        let ran = deltas
            .into_iter()
            .enumerate()
            .filter(|&(_, ns)| ns > 0)
            .map(|(cpu, ns)| (cpu as u32, ns as f64 / 1e9));
        match seen.owner {
            Owner::Vcpu(index) => {
                let vcpu = self.vcpus.entry(index).or_default();
                for (cpu, seconds) in ran {
                    *vcpu.run_seconds.get_mut(localities.of(cpu)) += seconds;
                    *vcpu.last_cpu_seconds.entry(cpu).or_default() += seconds;
                }
                add_events(vcpu, &seen.last, current, localities, exit_source);
            }
            Owner::Role(role) => {
                let run_seconds = self.roles.entry(role).or_default();
                for (cpu, seconds) in ran {
                    *run_seconds.get_mut(localities.of(cpu)) += seconds;
                }
            }
        }
    }
}

/// A vCPU's moves and KVM exits since `last`.
fn add_events(
    vcpu: &mut VcpuTotals,
    last: &ThreadCounters,
    current: &ThreadCounters,
    localities: &CpuLocalities,
    exit_source: &str,
) {
    vcpu.moves.add_since(&last.moves, &current.moves);
    for (reason, per_cpu) in &current.exits {
        let label = exit_reasons::name(exit_source, *reason);
        let before = last.exits.get(reason);
        for (cpu, n) in per_cpu.iter().enumerate() {
            let delta = n.saturating_sub(before.and_then(|b| b.get(cpu).copied()).unwrap_or(0));
            if delta > 0 {
                let locality = localities.of(cpu as u32);
                *vcpu.exits.entry((locality, label)).or_default() += delta;
            }
        }
    }
}
