//! The daemon's engine: one loop, data flowing one way. Each tick reads every source in one
//! place (the probes' counters and each vCPU thread's allowed CPUs; the libvirt inventory
//! when a scan has come; memory by node and GPU interrupts every `placement_read_seconds`),
//! keeps the probes' tracked threads in step with the running vCPUs, accounts, builds one
//! [`HostView`], lets the repin policy decide from it (recommend / enforce modes) and
//! publishes it. Every reader (/metrics, /, /status.json) reads that view and nothing else:
//! sources -> accounting -> view -> policy verdicts -> published view.

mod fixes;
mod host_view;
mod libvirt_source;
pub mod notify;
mod placement;
mod repin;
mod sources;
mod tracking;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::accounting::Accounting;
use crate::config::Config;
use crate::inventory::{Access, HostPaths, Inventory};
use crate::lifecycle::Lifecycle;
use crate::probes::{ProbeOptions, Probes};
use crate::topology::Topology;
use crate::view::HostView;

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

/// Only enforce mode writes through libvirt; observe and recommend hold a read-only
/// connection, so not even a bug could change a VM.
fn libvirt_access(mode: crate::config::Mode) -> Access {
    match mode {
        crate::config::Mode::Enforce => Access::ReadWrite,
        _ => Access::ReadOnly,
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
