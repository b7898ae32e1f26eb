//! The memory and interrupt fixes inside the engine: after the repin policy, evaluate
//! `policy::fixes` on this tick's readings, log and count each new verdict once, and, when
//! both `policy.mode` and `policy.memory` / `policy.irq` say enforce, act: an IRQ's affinity
//! is written at once (a few /proc writes), a migrate_pages runs on a thread of its own (it
//! copies the VM's memory), a numatune change goes to the libvirt worker. Every action leaves
//! an audit line with before/after and the reason, like a repin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use crate::config::{Config, FixMode, Mode};
use crate::interrupts::VfioInterrupts;
use crate::inventory::worker::{Poll, Ticket, Worker};
use crate::inventory::Vm;
use crate::memory::Resident;
use crate::policy::fixes::{
    self, FixGuards, FixInputs, FixVerdict, FixesView, IrqFix, Irqbalance, MemoryFix, MemoryMethod,
};
use crate::policy::unix_now;
use crate::remediate::{self, fix_record};
use crate::topology::Topology;

/// Where a memory move's answer comes from.
enum Pending {
    Libvirt(Ticket<MoveResult>),
    Thread(mpsc::Receiver<MoveResult>),
}

/// A memory move's outcome: what was done, or the outcome label and the error.
type MoveResult = Result<String, (&'static str, String)>;

/// The outcome label of a failed fix.
fn failed(e: remediate::fix_record::FixError) -> (&'static str, String) {
    match e {
        remediate::fix_record::FixError::Gone { .. } => ("skipped_gone", e.to_string()),
        remediate::fix_record::FixError::IrqChanged { .. } => ("skipped_operator", e.to_string()),
        e => ("failed", e.to_string()),
    }
}

/// A memory move on its way.
struct InFlight {
    domain: String,
    reason: String,
    answer: Pending,
}

/// The fixes' state in the daemon.
pub struct FixLoop {
    guards: FixGuards,
    /// What is published.
    pub view: FixesView,
    memory_moves: BTreeMap<(String, &'static str), u64>,
    irq_moves: BTreeMap<(String, String, &'static str), u64>,
    /// The last verdict reported per fix, keyed by (domain, GPU address or "memory"), so
    /// each situation is logged and counted once.
    reported: BTreeMap<(String, String), String>,
    irqbalance: Option<Irqbalance>,
    irqbalance_read: Option<Instant>,
    /// UUIDs whose record was read for its cooldown times.
    seeded: BTreeSet<String>,
    in_flight: Vec<InFlight>,
}

/// What one round reads.
pub struct FixSources<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// Running VMs.
    pub vms: &'a [Vm],
    /// Each VM's bytes per node.
    pub memory: &'a BTreeMap<String, Resident>,
    /// Each VM's vCPU remote share.
    pub remote_ratios: BTreeMap<String, f64>,
    /// The GPUs' interrupt lines.
    pub interrupts: &'a VfioInterrupts,
}

impl Default for FixLoop {
    fn default() -> Self {
        FixLoop {
            guards: FixGuards::new(unix_now()),
            view: FixesView::default(),
            memory_moves: BTreeMap::new(),
            irq_moves: BTreeMap::new(),
            reported: BTreeMap::new(),
            irqbalance: None,
            irqbalance_read: None,
            seeded: BTreeSet::new(),
            in_flight: Vec::new(),
        }
    }
}

impl FixLoop {
    /// One round: take answers, evaluate, report, act. `worker` makes libvirt calls.
    pub fn run(&mut self, config: &Config, sources: &FixSources, worker: &mut Worker) {
        let policy = &config.policy;
        let enforce = policy.mode == Mode::Enforce;
        self.settle(worker);
        self.guards.forget_gone(sources.vms);
        self.reported
            .retain(|(domain, _), _| sources.vms.iter().any(|vm| &vm.name == domain));
        self.seed(sources.vms, &config.qmp.state_dir);
        self.read_irqbalance(config, sources.vms);
        let now = unix_now();
        let plan = fixes::evaluate(
            policy,
            &self.guards,
            &FixInputs {
                topology: sources.topology,
                vms: sources.vms,
                memory: sources.memory,
                remote_ratios: &sources.remote_ratios,
                interrupts: sources.interrupts,
                irqbalance: self.irqbalance.as_ref(),
                enforce,
                now,
            },
        );
        for fix in &plan.irq {
            let key = (fix.domain.clone(), fix.gpu.clone());
            let lines: Vec<String> = fix.lines.iter().map(|l| l.irq.to_string()).collect();
            if fix.verdict == FixVerdict::Apply {
                self.apply_irq(config, fix, now);
            } else if self.is_new(key, format!("{:?} {}", fix.verdict, lines.join(","))) {
                tracing::info!(domain = %fix.domain, gpu = %fix.gpu, verdict = fix.verdict.outcome(), reason = %fix.reason, "irq affinity fix not made");
                self.count_irq(&fix.domain, &fix.gpu, fix.verdict.outcome());
            }
        }
        for fix in &plan.memory {
            let key = (fix.domain.clone(), "memory".to_string());
            if fix.verdict == FixVerdict::Apply {
                if !self.in_flight.iter().any(|f| f.domain == fix.domain) {
                    self.apply_memory(config, fix, worker, now);
                }
            } else if self.is_new(key, format!("{:?}", fix.verdict)) {
                tracing::info!(domain = %fix.domain, verdict = fix.verdict.outcome(), reason = %fix.reason, "memory fix not made");
                self.count_memory(&fix.domain, fix.verdict.outcome());
            }
        }
        self.view = FixesView {
            plan,
            memory_moves: self
                .memory_moves
                .iter()
                .map(|((d, o), n)| (d.clone(), o.to_string(), *n))
                .collect(),
            irq_moves: self
                .irq_moves
                .iter()
                .map(|((d, g, o), n)| (d.clone(), g.clone(), o.to_string(), *n))
                .collect(),
            irqbalance_running: (policy.irq != FixMode::Off).then_some(self.irqbalance.is_some()),
        };
    }

    /// Whether `signature` is new for `key` (and remembers it).
    fn is_new(&mut self, key: (String, String), signature: String) -> bool {
        self.reported.insert(key, signature.clone()).as_ref() != Some(&signature)
    }

    /// Reads the cooldown times of VMs first seen from their records.
    fn seed(&mut self, vms: &[Vm], dir: &Path) {
        self.seeded.retain(|u| vms.iter().any(|vm| &vm.uuid == u));
        for vm in vms.iter().filter(|vm| !vm.gpu_nodes.is_empty()) {
            if !self.seeded.insert(vm.uuid.clone()) {
                continue;
            }
            match fix_record::read(&fix_record::path(dir, &vm.uuid)) {
                Ok(Some(r)) => self.guards.seed(&vm.uuid, r.last_memory, r.last_irq),
                Ok(None) => {}
                Err(e) => tracing::warn!(domain = %vm.name, error = %e, "fixes record unreadable"),
            }
        }
    }

    /// Looks for irqbalance while a GPU VM runs and irq fixes are on, as often as a source
    /// without events is rescanned (its start raises none).
    fn read_irqbalance(&mut self, config: &Config, vms: &[Vm]) {
        if config.policy.irq == FixMode::Off || vms.iter().all(|vm| vm.gpus.is_empty()) {
            self.irqbalance = None;
            return;
        }
        let every = config.eventless_rescan();
        if self.irqbalance_read.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.irqbalance_read = Some(Instant::now());
        let found = crate::irqbalance::find(&config.irq_proc_root);
        if found.as_ref().map(|b| b.pid) != self.irqbalance.as_ref().map(|b| b.pid) {
            match &found {
                Some(b) => {
                    tracing::info!(pid = b.pid, banned = ?b.banned, "irqbalance runs: GPU interrupt lines it may move are reported, not moved")
                }
                None => tracing::info!("irqbalance does not run"),
            }
        }
        self.irqbalance = found;
    }

    fn apply_irq(&mut self, config: &Config, fix: &IrqFix, now: f64) {
        self.guards.record_irq(&fix.uuid, now);
        let result = remediate::irq::apply(&config.irq_proc_root, &config.qmp.state_dir, fix, now);
        let (domain, gpu) = (fix.domain.as_str(), fix.gpu.as_str());
        match result {
            Ok(moves) => {
                self.count_irq(domain, gpu, "applied");
                tracing::info!(domain, gpu, moves = %moves.join(", "), reason = %fix.reason, "irq affinity moved");
            }
            Err(e) => {
                let (outcome, e) = failed(e);
                self.count_irq(domain, gpu, outcome);
                tracing::warn!(domain, gpu, result = outcome, error = %e, "irq affinity not moved");
            }
        }
    }

    fn apply_memory(&mut self, config: &Config, fix: &MemoryFix, worker: &mut Worker, now: f64) {
        let rate = config.policy.memory_bytes_per_second;
        self.guards.record_memory(&fix.uuid, fix.bytes, rate, now);
        let (f, dir) = (fix.clone(), config.qmp.state_dir.clone());
        let what = format!("move the memory of domain {}", fix.domain);
        let answer = if let MemoryMethod::Numatune { .. } = fix.method {
            let vm_uuid = fix.uuid.clone();
            Pending::Libvirt(worker.submit(&what, move |lv| {
                let conn = lv.connection().map_err(|e| ("failed", e.to_string()))?;
                let domain = conn.lookup_domain_by_uuid_string(&vm_uuid).map_err(|e| {
                    let why = format!("no running domain of UUID {vm_uuid}: {}", e.message());
                    ("skipped_gone", why)
                })?;
                remediate::memory::apply(&f, Some(&domain), Path::new("/proc"), &dir, now)
                    .map_err(failed)
            }))
        } else {
            let (tx, rx) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("pinsight-mem".into())
                .spawn(move || {
                    let r = remediate::memory::apply(&f, None, Path::new("/proc"), &dir, now);
                    let _ = tx.send(r.map_err(failed));
                });
            if let Err(e) = spawned {
                tracing::warn!(domain = %fix.domain, error = %e, "cannot start the memory move's thread");
            }
            Pending::Thread(rx)
        };
        self.in_flight.push(InFlight {
            domain: fix.domain.clone(),
            reason: fix.reason.clone(),
            answer,
        });
    }

    /// Takes the answers of memory moves on their way, counting and logging each.
    fn settle(&mut self, worker: &Worker) {
        for mut f in std::mem::take(&mut self.in_flight) {
            let answer = match &mut f.answer {
                Pending::Libvirt(t) => t.poll(worker),
                Pending::Thread(rx) => match rx.try_recv() {
                    Ok(a) => Poll::Done(a),
                    Err(mpsc::TryRecvError::Empty) => Poll::Pending,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        Poll::Lost("the memory move's thread ended without an answer".into())
                    }
                },
            };
            let domain = f.domain.as_str();
            match answer {
                Poll::Pending => self.in_flight.push(f),
                Poll::Done(Ok(moves)) => {
                    self.count_memory(domain, "applied");
                    tracing::info!(domain, moves = %moves, reason = %f.reason, "memory moved");
                }
                Poll::Done(Err((outcome, e))) => {
                    self.count_memory(domain, outcome);
                    tracing::warn!(domain, result = outcome, error = %e, "memory not moved");
                }
                Poll::Lost(e) => {
                    let outcome = "failed";
                    self.count_memory(domain, outcome);
                    tracing::warn!(domain, result = outcome, error = %e, "memory not moved");
                }
            }
        }
    }

    fn count_memory(&mut self, domain: &str, outcome: &'static str) {
        *self
            .memory_moves
            .entry((domain.to_string(), outcome))
            .or_default() += 1;
    }

    fn count_irq(&mut self, domain: &str, gpu: &str, outcome: &'static str) {
        *self
            .irq_moves
            .entry((domain.to_string(), gpu.to_string(), outcome))
            .or_default() += 1;
    }

    /// Drops the counters of VMs that are gone.
    pub fn forget_gone(&mut self, vms: &[Vm]) {
        let running = |d: &String| vms.iter().any(|vm| &vm.name == d);
        self.memory_moves.retain(|(d, _), _| running(d));
        self.irq_moves.retain(|(d, _, _), _| running(d));
    }
}
