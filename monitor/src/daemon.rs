//! The daemon's engine: one loop that rescans libvirt, keeps the probes' tracked threads in
//! step with the running vCPUs, reads the counters, does the accounting, evaluates the repin
//! policy (recommend / enforce modes) and publishes one snapshot for the HTTP side. Data
//! flows one way: sources -> accounting -> policy -> snapshot.

mod repin;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::accounting::Accounting;
use crate::config::Config;
use crate::inventory::{HostPaths, Inventory, Libvirt};
use crate::lifecycle::Lifecycle;
use crate::metrics::{Snapshot, VmLabels};
use crate::probes::{ProbeOptions, Probes};
use crate::status::{vm_status, HostStatus};
use crate::topology::Topology;

/// What the HTTP side serves; replaced whole after every tick.
#[derive(Debug, Default)]
pub struct Published {
    /// For /metrics.
    pub snapshot: Snapshot,
    /// For /status.json and /.
    pub status: HostStatus,
    /// Ticks done (0 until the first one is published).
    pub ticks: u64,
}

/// Shared between the engine thread and the HTTP server.
pub type Shared = Arc<RwLock<Published>>;

/// The engine's state between ticks.
pub struct Engine {
    config: Config,
    topology: Topology,
    paths: HostPaths,
    libvirt: Libvirt,
    probes: Option<Probes>,
    probe_failure: Option<String>,
    accounting: Accounting,
    inventory: Inventory,
    libvirt_up: bool,
    last_scan: Option<Instant>,
    reported: HashSet<String>,
    shared: Shared,
    ticks: u64,
    /// The repin policy; None in observe mode.
    policy: Option<repin::PolicyLoop>,
    /// libvirt domain events (VM started, pins changed): a rescan at once.
    lifecycle: Option<Lifecycle>,
}

impl Engine {
    /// Loads the probes (a failure is logged and exported, not fatal) and prepares the loop.
    pub fn new(config: Config, topology: Topology, shared: Shared) -> Engine {
        let cpu_sockets: BTreeMap<u32, u32> =
            topology.cpus.values().map(|c| (c.id, c.socket)).collect();
        let options = ProbeOptions {
            max_threads: config.probes.max_threads,
            max_exit_keys: config.probes.max_exit_keys,
            kvm_exit_source: config.probes.kvm_exit_source,
            cpu_sockets,
        };
        let (probes, probe_failure) = match Probes::load(options) {
            Ok(p) => {
                for (name, st) in p.status() {
                    tracing::info!(probe = name, attached = st.attached, detail = %st.detail, "probe");
                }
                if !crate::probes::bpf_stats_enabled() {
                    tracing::info!("kernel.bpf_stats_enabled is 0: probe run-time self-metrics are off (pinsight run --bpf-stats turns them on)");
                }
                (Some(p), None)
            }
            Err(e) => {
                tracing::error!(error = %e, "eBPF probes could not be loaded: run time is NOT being measured; serving inventory only");
                (None, Some(e.to_string()))
            }
        };
        // Loading parses the kernel's whole BTF (several MiB, many small allocations) and
        // frees it again; hand those pages back so the daemon's resident size reflects what it
        // keeps, not what loading needed.
        // SAFETY: malloc_trim only releases free heap memory.
        unsafe { libc::malloc_trim(0) };
        let exit_source = probes.as_ref().and_then(|p| p.exit_source());
        let window = Duration::from_secs_f64(config.remote_ratio_window_seconds);
        let paths = HostPaths {
            sysfs_root: config.sysfs_root.clone(),
            qemu_run_dir: config.qemu_run_dir.clone(),
            ..HostPaths::default()
        };
        let lifecycle = match Lifecycle::start(&config.libvirt_uri) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no libvirt domain events: new VMs and pin changes are seen at the next rescan (rescan_seconds)");
                None
            }
        };
        Engine {
            policy: repin::PolicyLoop::new(&config.policy),
            lifecycle,
            libvirt: Libvirt::new(&config.libvirt_uri),
            accounting: Accounting::new(window, exit_source),
            config,
            topology,
            paths,
            probes,
            probe_failure,
            inventory: Inventory::default(),
            libvirt_up: false,
            last_scan: None,
            reported: HashSet::new(),
            shared,
            ticks: 0,
        }
    }

    /// Runs ticks until `stop` is set.
    pub fn run(mut self, stop: Arc<AtomicBool>) {
        let tick = Duration::from_secs_f64(self.config.tick_seconds);
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            self.tick(started);
            let rest = tick.saturating_sub(started.elapsed());
            // Sleep in small steps so a stop request, or a domain event, is seen quickly.
            let until = Instant::now() + rest;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) && !self.event_pending() {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        tracing::info!("engine stopped");
    }

    /// Whether a libvirt domain event asks for a rescan.
    fn event_pending(&self) -> bool {
        self.lifecycle.as_ref().is_some_and(Lifecycle::pending)
    }

    /// One round: rescan if due, sync tracking, read, account, evaluate the policy, publish.
    pub fn tick(&mut self, now: Instant) {
        let rescan = Duration::from_secs_f64(self.config.rescan_seconds);
        let event = self.lifecycle.as_ref().is_some_and(Lifecycle::take);
        if event
            || self
                .last_scan
                .is_none_or(|t| now.duration_since(t) >= rescan)
        {
            self.rescan();
            self.last_scan = Some(now);
        }
        let counters = match &self.probes {
            Some(p) => p.read().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading probe maps failed");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        };
        self.accounting
            .update(now, &self.inventory.vms, &counters, &self.topology);
        // With libvirt away the inventory is stale and nothing could be changed: wait.
        if let Some(policy) = self.policy.as_mut().filter(|_| self.libvirt_up) {
            repin::refresh_affinity(&mut self.inventory.vms);
            policy.forget_gone(&self.inventory.vms);
            let changed = policy.run(
                &self.topology,
                &self.inventory.vms,
                self.accounting.domains(),
                &mut self.libvirt,
            );
            if changed {
                // The next round must see the new pins before deciding again.
                self.last_scan = None;
            }
        }
        self.publish();
    }

    /// Forces a libvirt rescan at the next tick (a lifecycle event arrived).
    pub fn request_rescan(&mut self) {
        self.last_scan = None;
    }

    fn rescan(&mut self) {
        match self.libvirt.scan(&self.topology, &self.paths) {
            Ok(inventory) => {
                if !self.libvirt_up {
                    tracing::info!(
                        uri = self.libvirt.uri(),
                        vms = inventory.vms.len(),
                        "libvirt reachable"
                    );
                }
                self.libvirt_up = true;
                self.log_changes(&inventory);
                self.sync_tracking(inventory);
            }
            Err(e) => {
                if self.libvirt_up || self.ticks == 0 {
                    tracing::warn!(error = %e, "libvirt unreachable: keeping the last known VMs, retrying every rescan");
                }
                self.libvirt_up = false;
            }
        }
    }

    fn log_changes(&mut self, new: &Inventory) {
        let old: BTreeSet<&str> = self.inventory.vms.iter().map(|v| v.name.as_str()).collect();
        for vm in &new.vms {
            if !old.contains(vm.name.as_str()) {
                tracing::info!(domain = %vm.name, vcpus = vm.vcpus.len(), gpus = ?vm.gpus.iter().map(|g| &g.address).collect::<Vec<_>>(), gpu_nodes = ?vm.gpu_nodes, "VM found");
            }
        }
        let new_names: BTreeSet<&str> = new.vms.iter().map(|v| v.name.as_str()).collect();
        for gone in old.difference(&new_names) {
            tracing::info!(domain = %gone, "VM gone");
        }
        for problem in &new.problems {
            if self.reported.insert(problem.clone()) {
                tracing::warn!("{problem}");
            }
        }
    }

    /// Tracks exactly the vCPU threads of `inventory`, folding the final counters of threads
    /// that went away into their VM before forgetting them.
    fn sync_tracking(&mut self, inventory: Inventory) {
        if let Some(probes) = self.probes.as_mut() {
            let wanted: BTreeSet<u32> = inventory
                .vms
                .iter()
                .flat_map(|vm| vm.vcpus.iter().map(|t| t.tid))
                .collect();
            let stale: Vec<u32> = probes.tracked().difference(&wanted).copied().collect();
            for tid in stale {
                match probes.untrack(tid) {
                    Ok(last) => {
                        self.accounting
                            .retire(tid, &last, &self.inventory.vms, &self.topology)
                    }
                    Err(e) => tracing::warn!(tid, error = %e, "untracking thread failed"),
                }
            }
            for tid in wanted.difference(&probes.tracked().clone()) {
                if let Err(e) = probes.track(*tid) {
                    if self.reported.insert(format!("track {tid}")) {
                        tracing::warn!(tid, error = %e, "cannot track vCPU thread");
                    }
                }
            }
        }
        self.inventory = inventory;
    }

    fn publish(&mut self) {
        self.ticks += 1;
        let mut probes: BTreeMap<String, bool> = BTreeMap::new();
        let (mut program_stats, mut maps, mut map_errors) = (None, Vec::new(), 0);
        match &self.probes {
            Some(p) => {
                for (name, st) in p.status() {
                    probes.insert(name.to_string(), st.attached);
                }
                program_stats = p.program_stats().map(|v| {
                    v.into_iter()
                        .map(|s| (s.program.to_string(), s.run_time_ns, s.run_count))
                        .collect()
                });
                maps = p
                    .map_usage()
                    .into_iter()
                    .map(|m| (m.map.to_string(), m.entries, m.capacity))
                    .collect();
                map_errors = p.map_errors();
            }
            None => {
                probes.insert(monitor_common::programs::SCHED_SWITCH.into(), false);
            }
        }
        let vms: Vec<VmLabels> = self.inventory.vms.iter().map(VmLabels::from_vm).collect();
        let totals = self.accounting.domains();
        let mut problems = self.inventory.problems.clone();
        if let Some(f) = &self.probe_failure {
            problems.push(format!("probes not loaded: {f}"));
        }
        let status = HostStatus {
            version: env!("CARGO_PKG_VERSION").into(),
            libvirt_up: self.libvirt_up,
            probes: probes.clone(),
            vms: self
                .inventory
                .vms
                .iter()
                .map(|vm| {
                    let mut st = vm_status(vm, totals.get(&vm.name), &self.topology);
                    st.policy = self
                        .policy
                        .as_ref()
                        .and_then(|p| p.decision(&vm.name))
                        .map(policy_line);
                    st
                })
                .collect(),
            problems,
            mode: self.config.policy.mode.as_str().to_string(),
        };
        let mut shared = match self.shared.write() {
            Ok(guard) => guard,
            // A panic while holding the lock cannot leave a half-written snapshot (we replace
            // fields whole), so the data is still usable.
            Err(poisoned) => poisoned.into_inner(),
        };
        let scrape_duration_seconds = shared.snapshot.scrape_duration_seconds;
        shared.snapshot = Snapshot {
            vms,
            totals: totals.clone(),
            probes,
            libvirt_up: self.libvirt_up,
            program_stats,
            maps,
            map_errors,
            cross_socket_penalty: self.config.cross_socket_penalty,
            per_vcpu: self.config.per_vcpu_metrics,
            repins: self
                .policy
                .as_ref()
                .map(|p| p.repins.clone())
                .unwrap_or_default(),
            recommended: self
                .policy
                .as_ref()
                .map(|p| p.recommended.clone())
                .unwrap_or_default(),
            scrape_duration_seconds,
        };
        shared.status = status;
        shared.ticks = self.ticks;
    }
}

/// The policy's current verdict on a VM, in one line, for /status.json.
fn policy_line(d: &crate::policy::VmDecision) -> String {
    format!("{}: {}", d.verdict.as_str(), d.reason)
}
