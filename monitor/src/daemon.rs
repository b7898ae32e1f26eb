//! The daemon's engine: one loop, data flowing one way. Each tick reads every source in one
//! place (the probes' counters and each vCPU thread's allowed CPUs; the libvirt inventory
//! when a scan has come; memory by node and GPU interrupts every `placement_read_seconds`),
//! keeps the probes' tracked threads in step with the running vCPUs, accounts, builds one
//! [`HostView`], lets the repin policy decide from it (recommend / enforce modes) and
//! publishes it. Every reader (/metrics, /, /status.json) reads that view and nothing else:
//! sources -> accounting -> view -> policy verdicts -> published view.

mod fixes;
mod libvirt_source;
pub mod notify;
mod placement;
mod repin;
mod tracking;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::accounting::Accounting;
use crate::config::Config;
use crate::inventory::{Access, HostPaths, Inventory};
use crate::lifecycle::Lifecycle;
use crate::probes::{ProbeOptions, Probes, ThreadCounters};
use crate::topology::Topology;
use crate::view::{HostView, MapView, ProbeView, ProbesView, ProgramView, ViewInputs};

/// The engine's newest published view, shared with every reader (HTTP). Readers clone the
/// `Arc` and never write; the engine replaces it whole after every tick.
pub type Shared = Arc<RwLock<Arc<HostView>>>;

/// An empty view to share before the first tick.
pub fn shared() -> Shared {
    Arc::new(RwLock::new(Arc::new(HostView::default())))
}

/// Where a reload hands the engine its new configuration (taken at the next tick).
pub type Reload = Arc<std::sync::Mutex<Option<Config>>>;

/// The engine's state between ticks.
pub struct Engine {
    config: Config,
    topology: Topology,
    paths: HostPaths,
    /// libvirt, called only through a worker with a deadline.
    libvirt: libvirt_source::LibvirtSource,
    probes: Option<Probes>,
    probe_failure: Option<String>,
    accounting: Accounting,
    inventory: Inventory,
    /// When the last scan was asked for.
    last_scan: Option<Instant>,
    /// When memory and interrupts are read next.
    placement_cadence: placement::Cadence,
    /// A domain event asked for a rescan that is not on its way yet.
    rescan_wanted: bool,
    /// Why the policy waits, as last logged.
    paused: Option<String>,
    /// Each VM's memory by node and its GPUs' interrupts, as last read.
    placement: placement::Placement,
    /// The tests' fault injection, read from the environment once.
    fault: FaultInjection,
    /// `pinsight calibrate`'s figures, read at start and on reload, or why they cannot be.
    calibration: Option<crate::calibration::Calibration>,
    calibration_problem: Option<String>,
    /// Problems already logged; pruned to those the last scan still found.
    reported: HashSet<String>,
    /// Which vCPU threads the probes account.
    tracking: tracking::Tracking,
    /// systemd's watchdog and status line.
    notifier: notify::Notifier,
    shared: Shared,
    ticks: u64,
    /// The repin policy; None in observe mode.
    policy: Option<repin::PolicyLoop>,
    /// The memory and interrupt fixes (run with the policy).
    fixes: fixes::FixLoop,
    /// libvirt domain events (VM started, pins changed): a rescan at once.
    lifecycle: Option<Lifecycle>,
    /// QEMU VMs without libvirt, scanned through their QMP sockets on a thread of its own.
    qmp: crate::inventory::qmp::Background,
    /// The newest libvirt and QMP inventories; the engine's is both merged.
    libvirt_inventory: Inventory,
    qmp_inventory: Inventory,
}

/// Hands free heap pages back to the kernel after a burst of allocations, so the daemon's
/// resident size is what it keeps, not what the burst needed.
fn release_free_heap() {
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe { libc::malloc_trim(0) };
}

impl Engine {
    /// Loads the probes (a failure is logged and exported, not fatal) and prepares the loop.
    pub fn new(config: Config, topology: Topology, shared: Shared) -> Engine {
        let placement = placement::Placement::new(config.numa_maps_fallback());
        let options = ProbeOptions {
            max_threads: config.probes.max_threads,
            max_other_threads: config.probes.max_other_threads,
            kvm_exit_source: config.probes.kvm_exit_source,
            cpu_topo: topology.cpu_topo(),
        };
        let (probes, probe_failure) = match Probes::load(options) {
            Ok(p) => {
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
        // frees it again.
        release_free_heap();
        let exit_source = probes.as_ref().and_then(|p| p.exit_source());
        let window = Duration::from_secs_f64(config.remote_ratio_window_seconds);
        let (calibration, calibration_problem) =
            crate::calibration::load(&config.calibration_file, None);
        let paths = HostPaths::of(&config);
        let lifecycle = match Lifecycle::start(&config.libvirt_uri) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(error = %e, "no libvirt domain events: new VMs and pin changes are seen at the next rescan (at least once every 5 s)");
                None
            }
        };
        Engine {
            libvirt_inventory: Inventory::default(),
            qmp_inventory: Inventory::default(),
            qmp: crate::inventory::qmp::Background::start(
                config.qmp.clone(),
                topology.clone(),
                paths.clone(),
                config.eventless_rescan(),
            ),
            policy: repin::PolicyLoop::new(&config.policy, &config.qmp.state_dir),
            fixes: fixes::FixLoop::default(),
            lifecycle,
            libvirt: libvirt_source::LibvirtSource::new(
                &config.libvirt_uri,
                libvirt_access(config.policy.mode),
                Duration::from_secs_f64(config.libvirt_timeout_seconds),
            ),
            accounting: Accounting::new(window, exit_source),
            config,
            topology,
            paths,
            probes,
            probe_failure,
            inventory: Inventory::default(),
            last_scan: None,
            placement_cadence: placement::Cadence::new(),
            rescan_wanted: false,
            paused: None,
            placement,
            fault: FaultInjection::from_env(),
            calibration,
            calibration_problem,
            reported: HashSet::new(),
            tracking: tracking::Tracking::default(),
            notifier: notify::Notifier::from_env(),
            shared,
            ticks: 0,
        }
    }

    /// Runs ticks until `stop` is set, taking a reloaded configuration from `reload`.
    pub fn run(mut self, stop: Arc<AtomicBool>, reload: Reload) {
        while !stop.load(Ordering::Relaxed) {
            let pending = reload.lock().map(|mut r| r.take()).unwrap_or(None);
            if let Some(config) = pending {
                self.reconfigure(config);
            }
            let tick = Duration::from_secs_f64(self.config.tick_seconds);
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

    /// Takes a reloaded configuration: everything that can change live does; the rest was
    /// already refused by name (see `Config::live_update`).
    fn reconfigure(&mut self, config: Config) {
        self.libvirt.reconfigure(
            libvirt_access(config.policy.mode),
            Duration::from_secs_f64(config.libvirt_timeout_seconds),
        );
        repin::PolicyLoop::reconfigure(&mut self.policy, &config.policy, &config.qmp.state_dir);
        self.accounting
            .set_window(Duration::from_secs_f64(config.remote_ratio_window_seconds));
        self.placement.set_fallback(config.numa_maps_fallback());
        self.qmp
            .reconfigure(config.qmp.clone(), config.eventless_rescan());
        (self.calibration, self.calibration_problem) = crate::calibration::load(
            &config.calibration_file,
            self.calibration_problem.as_deref(),
        );
        self.config = config;
        tracing::info!(
            mode = self.config.policy.mode.as_str(),
            tick_seconds = self.config.tick_seconds,
            rescan_seconds = self.config.rescan_seconds,
            "configuration reloaded"
        );
    }

    /// Whether a libvirt domain event asks for a rescan.
    fn event_pending(&self) -> bool {
        self.lifecycle.as_ref().is_some_and(Lifecycle::pending)
    }

    /// One round, one way: read the sources, account, build the view, let the policy decide
    /// from it (and act in enforce mode), publish.
    pub fn tick(&mut self, now: Instant) {
        // Fault injection for the tests only (the unit and the DaemonSet never set it): an
        // engine that dies must take the process with it.
        if let Some(n) = self.fault.panic_at_tick {
            assert!(self.ticks + 1 != n, "PINSIGHT_TEST_PANIC_AT_TICK={n}");
        }
        // And an engine that stops ticking (without dying) must stop the watchdog's pings.
        if self.fault.wedge_at_tick == Some(self.ticks + 1) {
            tracing::warn!("PINSIGHT_TEST_WEDGE_AT_TICK: the engine stops ticking");
            loop {
                std::thread::park();
            }
        }
        let counters = self.read_sources(now);
        self.accounting
            .update(now, &self.inventory.vms, &counters, &self.topology);
        self.ticks += 1;
        let mut view = self.build_view();
        let paused = self.policy_paused(now);
        if paused != self.paused {
            match &paused {
                // Every start waits for its first inventory: not worth a warning.
                Some(why) if self.libvirt.inventory_unix_seconds().is_none() => {
                    tracing::info!("repin policy waits: {why}")
                }
                Some(why) => tracing::warn!("repin policy paused: {why}"),
                None if self.paused.is_some() => tracing::info!("repin policy resumed"),
                None => {}
            }
            self.paused = paused;
        }
        if let Some(policy) = self.policy.as_mut() {
            // Answers of actions on their way: a VM whose pins changed is rescanned before
            // the policy decides on it again.
            if policy.settle(self.libvirt.worker()) {
                self.last_scan = None;
            }
            // With libvirt away or its inventory stale nothing can be decided well: wait.
            if self.paused.is_none() {
                policy.forget_gone(&self.inventory.vms);
                policy.run(
                    &self.topology,
                    &self.inventory.vms,
                    &view,
                    self.libvirt.worker(),
                );
                self.fixes.forget_gone(&self.inventory.vms);
                let sources = fixes::FixSources {
                    topology: &self.topology,
                    vms: &self.inventory.vms,
                    memory: &self.placement.memory,
                    remote_ratios: view
                        .vms
                        .iter()
                        .filter_map(|v| Some((v.domain.clone(), v.remote_ratio?)))
                        .collect(),
                    interrupts: &self.placement.interrupts,
                };
                self.fixes
                    .run(&self.config, &sources, self.libvirt.worker());
            }
            view.fixes = Some(self.fixes.view.clone());
            view.set_policy(&policy.plan, &policy.repins);
            view.policy_paused = self.paused.clone();
        }
        self.notifier.ticked(&view, now);
        let view = Arc::new(view);
        match self.shared.write() {
            Ok(mut guard) => *guard = view,
            // A reader cannot poison the lock with a half-written view (we replace the
            // pointer whole), so the lock is still good.
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }

    /// Every source, read in one place: the libvirt inventory when a scan asked for earlier
    /// has come (asking for the next when one is due or a domain event wants it); each vCPU
    /// thread's allowed CPUs; when due, the GPUs' interrupts and each VM's memory; then the
    /// probes. Nothing here waits for libvirt.
    fn read_sources(&mut self, now: Instant) -> BTreeMap<u32, ThreadCounters> {
        self.rescan_wanted |= self.lifecycle.as_ref().is_some_and(Lifecycle::take);
        // With events, the periodic scan is a safety net; without, it is how changes are seen.
        let rescan = match self.lifecycle.as_ref().is_some_and(Lifecycle::connected) {
            true => self.config.rescan(),
            false => self.config.eventless_rescan(),
        };
        let due = self
            .last_scan
            .is_none_or(|t| now.duration_since(t) >= rescan);
        if (due || self.rescan_wanted) && !self.libvirt.scanning() {
            let grace = Duration::from_secs_f64(self.config.tick_seconds / 4.0).min(SCAN_GRACE);
            self.libvirt.start_scan(&self.topology, &self.paths, grace);
            self.last_scan = Some(now);
            self.rescan_wanted = false;
        }
        let libvirt = self.libvirt.poll(now);
        let qmp = self.qmp.take();
        let new_inventory = libvirt.is_some() || qmp.is_some();
        if new_inventory {
            // Each source keeps its last answer: a host without libvirt still sees its
            // QEMU VMs, and a hung QMP socket never holds back libvirt's.
            if let Some(i) = libvirt {
                self.libvirt_inventory = i;
                // A scan allocates and frees much (every domain's XML, its parse, /proc
                // reads). Once a rescan: cheap.
                release_free_heap();
            }
            if let Some(i) = qmp {
                self.qmp_inventory = i;
            }
            let mut inventory = self.libvirt_inventory.clone();
            crate::inventory::qmp::merge(self.qmp_inventory.clone(), &mut inventory);
            self.log_changes(&inventory);
            self.sync_tracking(inventory);
        } else {
            // vCPU pins are what the policy acts on: read every tick (one sched_getaffinity
            // per vCPU; a new inventory has just read them), so a pin changed behind
            // libvirt's back is seen within a tick.
            self.inventory.refresh_affinity();
        }
        // Memory and interrupt lines change slowly: read them every placement_read_seconds,
        // and at once for a new inventory.
        let tick = Duration::from_secs_f64(self.config.tick_seconds);
        if new_inventory
            || self
                .placement_cadence
                .due(now, self.config.placement_read(), tick)
        {
            let roots = placement::MemoryRoots {
                proc: &self.paths.proc_root,
                cgroup: &self.config.cgroup_root,
            };
            self.placement
                .read(&self.inventory, &self.config.irq_proc_root, roots);
            self.placement_cadence.read_at(now);
        }
        match &self.probes {
            Some(p) => p.read().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading probe maps failed");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
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
        let cap = self.config.max_exported_vms as usize;
        if new.vms.len() > cap && self.inventory.vms.len() <= cap {
            tracing::warn!(
                vms = new.vms.len(),
                max_exported_vms = cap,
                "more VMs than max_exported_vms: the per-VM metric families show the first {cap} by name (pinsight_domains_not_exported counts the rest); status and the policy see all"
            );
        }
        // A problem that went away is logged again if it comes back.
        self.reported.retain(|p| new.problems.contains(p));
    }

    /// Tracks exactly the vCPU threads of `inventory`, then makes it the current one.
    fn sync_tracking(&mut self, inventory: Inventory) {
        if let Some(probes) = self.probes.as_mut() {
            self.tracking.sync(
                probes,
                &mut self.accounting,
                &self.inventory.vms,
                &inventory,
                &self.topology,
            );
        }
        self.inventory = inventory;
    }

    /// This tick's view, before the policy's verdicts.
    fn build_view(&self) -> HostView {
        let mut extra_problems = Vec::new();
        if let Some(f) = &self.probe_failure {
            extra_problems.push(format!("probes not loaded: {f}"));
        }
        if let Some(why) = self.libvirt.down_reason() {
            extra_problems.push(why.to_string());
        }
        extra_problems.extend(self.placement.problems());
        extra_problems.extend(self.calibration_problem.clone());
        let mut view = HostView::build(ViewInputs {
            topology: &self.topology,
            inventory: &self.inventory,
            totals: self.accounting.domains(),
            probes: probes_view(self.probes.as_ref()),
            libvirt_up: self.libvirt.up(),
            tick_unix_seconds: libvirt_source::unix_seconds(std::time::SystemTime::now()),
            inventory_unix_seconds: self.libvirt.inventory_unix_seconds(),
            mode: self.config.policy.mode,
            per_vcpu_metrics: self.config.per_vcpu_metrics,
            penalties: self.config.penalties(),
            calibration: self.calibration.as_ref(),
            max_exported_vms: self.config.max_exported_vms as usize,
            tick: self.ticks,
            extra_problems,
            measuring: self.probes.as_ref().is_some_and(|p| {
                p.status()
                    .get(monitor_common::programs::SCHED_SWITCH)
                    .is_some_and(|s| s.attached)
            }),
            unmeasured_tids: self.tracking.unmeasured().collect(),
            interrupts: &self.placement.interrupts,
            memory: &self.placement.memory,
        });
        view.topology.reserved_cpus = self.config.policy.reserved_cpus.clone();
        view
    }
}

impl Engine {
    /// Why the policy should not decide now: libvirt down, or its last whole inventory older
    /// than three rescans plus a deadline (the VMs and pins it shows may be gone or changed).
    fn policy_paused(&self, now: Instant) -> Option<String> {
        self.policy.as_ref()?;
        if !self.libvirt.up() {
            return Some(format!("libvirt at {} is down", self.config.libvirt_uri));
        }
        let stale_after = Duration::from_secs_f64(
            3.0 * self.config.rescan_seconds + self.config.libvirt_timeout_seconds,
        );
        match self.libvirt.inventory_age(now) {
            None => Some("no inventory from libvirt yet".into()),
            Some(age) if age > stale_after => Some(format!(
                "the inventory is stale: libvirt's last whole answer is {:.0} s old",
                age.as_secs_f64()
            )),
            Some(_) => None,
        }
    }
}

/// The most a tick waits for a scan it asked for (a quarter tick at most): a healthy libvirt
/// answers in milliseconds, and a hung one costs a tick no more than this.
const SCAN_GRACE: Duration = Duration::from_millis(250);

/// Only enforce mode writes through libvirt; observe and recommend hold a read-only
/// connection, so not even a bug could change a VM.
fn libvirt_access(mode: crate::config::Mode) -> Access {
    match mode {
        crate::config::Mode::Enforce => Access::ReadWrite,
        _ => Access::ReadOnly,
    }
}

/// The probes' state for the view; without probes, sched_switch shows as not attached.
fn probes_view(probes: Option<&Probes>) -> ProbesView {
    let Some(p) = probes else {
        let off = ProbeView {
            attached: false,
            detail: "the eBPF object could not be loaded".into(),
        };
        return ProbesView {
            probes: BTreeMap::from([(monitor_common::programs::SCHED_SWITCH.to_string(), off)]),
            ..Default::default()
        };
    };
    ProbesView {
        probes: p
            .status()
            .iter()
            .map(|(name, st)| {
                let view = ProbeView {
                    attached: st.attached,
                    detail: st.detail.clone(),
                };
                (name.to_string(), view)
            })
            .collect(),
        program_stats: p.program_stats().map(|v| {
            v.into_iter()
                .map(|s| ProgramView {
                    program: s.program.to_string(),
                    run_time_ns: s.run_time_ns,
                    run_count: s.run_count,
                })
                .collect()
        }),
        maps: p
            .map_usage()
            .into_iter()
            .map(|m| MapView {
                map: m.map.to_string(),
                entries: m.entries,
                capacity: m.capacity,
            })
            .collect(),
        map_errors: p.map_errors(),
        unseen_switches: p.unseen_switches(),
    }
}

/// Test-only faults, from PINSIGHT_TEST_PANIC_AT_TICK and PINSIGHT_TEST_WEDGE_AT_TICK (the
/// tick number at which the engine panics, or stops ticking without dying).
#[derive(Debug, Default)]
struct FaultInjection {
    panic_at_tick: Option<u64>,
    wedge_at_tick: Option<u64>,
}

impl FaultInjection {
    fn from_env() -> Self {
        let tick = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        FaultInjection {
            panic_at_tick: tick("PINSIGHT_TEST_PANIC_AT_TICK"),
            wedge_at_tick: tick("PINSIGHT_TEST_WEDGE_AT_TICK"),
        }
    }
}
