//! The memory and interrupt fixes: for a GPU VM whose vCPUs sit by its GPU but whose memory
//! is mostly elsewhere, move the memory to the GPU's node(s); for a GPU interrupt line
//! delivered off the GPU's node, move its affinity to that node's CPUs. Pure decisions, with
//! their own guard rails (a host-wide bytes-per-second budget for memory, a per-VM cooldown
//! per kind) and irqbalance respected: while it runs and has not banned an IRQ, pinsight
//! reports instead of writing. The daemon acts on them (`daemon::fixes`), `pinsight plan`
//! prints them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

mod irq;
mod memory;
pub use irq::banned_irqs;
use irq::{guard_irq, irq_fixes};
use memory::{guard_memory, memory_fix};

use crate::config::{FixMode, PolicyConfig};
use crate::cpuset::CpuSet;
use crate::interrupts::VfioInterrupts;
use crate::inventory::Vm;
use crate::memory::Resident;
use crate::topology::Topology;

/// The longest the memory budget accrues: moves larger than this much budget never start.
pub const BUDGET_ACCRUAL_SECONDS: f64 = 3600.0;

/// What the policy concludes for one fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FixVerdict {
    /// Make the move now (enforce).
    Apply,
    /// Make it only in words (`recommend`, or the daemon's mode is not enforce).
    Recommend,
    /// A fix of this kind was made on the VM recently.
    SkippedCooldown,
    /// The memory budget has not accrued enough bytes yet.
    WaitingBudget,
    /// irqbalance runs and would move the line back.
    SkippedIrqbalance,
    /// Only a changed definition and a restart can do it (strict numatune).
    NeedsRestart,
}

impl FixVerdict {
    /// The `outcome` label of the moves counters for a verdict that is not acted on.
    pub fn outcome(self) -> &'static str {
        match self {
            FixVerdict::Apply => "applied",
            FixVerdict::Recommend => "recommended",
            FixVerdict::SkippedCooldown => "skipped_cooldown",
            FixVerdict::WaitingBudget => "waiting_budget",
            FixVerdict::SkippedIrqbalance => "skipped_irqbalance",
            FixVerdict::NeedsRestart => "needs_restart",
        }
    }
}

/// How a VM's memory can be moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MemoryMethod {
    /// libvirt's live numatune change (`virDomainSetNumaParameters`): only mode='restrictive'
    /// allows it (libvirt >= 8.0, commit 06f405c627; older ones wanted strict). libvirt then
    /// moves the pages through the cgroup's cpuset.mems.
    Numatune {
        /// The nodeset before ("0").
        before: String,
        /// The nodeset after (the GPU's nodes).
        after: String,
    },
    /// migrate_pages(2) of the QEMU process from the nodes it is on to the GPU's, as numad
    /// does (no numatune, or preferred / interleave, which bound no node).
    MigratePages,
    /// mode='strict': the cgroup's cpuset.mems bounds where migrate_pages may put pages and
    /// libvirt refuses a live nodeset change; the definition must change, then a restart.
    Restart,
}

/// A VM's memory move.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryFix {
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// QEMU process id.
    pub pid: u32,
    /// Bytes off the GPU's node(s): what the move would copy.
    pub bytes: u64,
    /// Their share of the VM's memory.
    pub off_ratio: f64,
    /// Nodes the memory is on now, off the GPU's (a node list, "0").
    pub from: CpuSet,
    /// The GPU's nodes.
    pub to: CpuSet,
    /// How.
    pub method: MemoryMethod,
    /// What to do.
    pub verdict: FixVerdict,
    /// Why, naming the rule and the figures.
    pub reason: String,
}

/// One interrupt line to move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IrqMove {
    /// Host IRQ number.
    pub irq: u32,
    /// Its smp_affinity_list now.
    pub before: CpuSet,
    /// The GPU node's CPUs.
    pub after: CpuSet,
}

/// The misplaced lines of one GPU of a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IrqFix {
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// The GPU's PCI address.
    pub gpu: String,
    /// Its lines delivered off its node.
    pub lines: Vec<IrqMove>,
    /// What to do.
    pub verdict: FixVerdict,
    /// Why.
    pub reason: String,
}

/// A running irqbalance, as found under the proc root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Irqbalance {
    /// Its pid.
    pub pid: u32,
    /// IRQs its command line bans (`--banirq=N`, `-i N`): it leaves those alone.
    pub banned: BTreeSet<u32>,
}

/// Every fix the policy sees on the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FixPlan {
    /// Memory moves, by domain.
    pub memory: Vec<MemoryFix>,
    /// Interrupt moves, by domain and GPU.
    pub irq: Vec<IrqFix>,
    /// irqbalance, when it runs.
    pub irqbalance: Option<Irqbalance>,
}

/// The fixes as the daemon publishes them: the plan and the moves counted by outcome.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FixesView {
    /// The last evaluation.
    pub plan: FixPlan,
    /// pinsight_memory_moves_total by (domain, outcome).
    pub memory_moves: Vec<(String, String, u64)>,
    /// pinsight_irq_moves_total by (domain, gpu, outcome).
    pub irq_moves: Vec<(String, String, String, u64)>,
    /// Whether irqbalance runs (None: not looked for, policy.irq = "off").
    pub irqbalance_running: Option<bool>,
}

/// What the fixes are decided from.
pub struct FixInputs<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// Running VMs.
    pub vms: &'a [Vm],
    /// Each VM's resident bytes per node, by domain name.
    pub memory: &'a BTreeMap<String, Resident>,
    /// Each VM's vCPU remote share over the window, by domain name (absent: unknown).
    pub remote_ratios: &'a BTreeMap<String, f64>,
    /// The GPUs' interrupt lines with their affinity.
    pub interrupts: &'a VfioInterrupts,
    /// irqbalance, if it runs.
    pub irqbalance: Option<&'a Irqbalance>,
    /// Whether the daemon's own mode is enforce.
    pub enforce: bool,
    /// Unix time, seconds.
    pub now: f64,
}

/// The fixes' guard rails between evaluations: per-VM cooldowns and the memory budget.
#[derive(Debug, Clone)]
pub struct FixGuards {
    /// Last memory fix per domain UUID.
    memory_acted: BTreeMap<String, f64>,
    /// Last interrupt fix per domain UUID.
    irq_acted: BTreeMap<String, f64>,
    /// The time from which the memory budget accrues.
    budget_since: f64,
}

impl FixGuards {
    /// Guards with no history; the budget starts accruing at `now`.
    pub fn new(now: f64) -> FixGuards {
        FixGuards {
            memory_acted: BTreeMap::new(),
            irq_acted: BTreeMap::new(),
            budget_since: now,
        }
    }

    /// Bytes the budget allows now at `rate` bytes per second.
    pub fn allowance(&self, rate: f64, now: f64) -> f64 {
        let since = self.budget_since.max(now - BUDGET_ACCRUAL_SECONDS);
        ((now - since) * rate).max(0.0)
    }

    /// Notes a memory move of `bytes` on the VM of UUID `uuid` (tried, whatever its outcome:
    /// a failed migrate_pages may have moved some pages).
    pub fn record_memory(&mut self, uuid: &str, bytes: u64, rate: f64, now: f64) {
        self.memory_acted.insert(uuid.to_string(), now);
        let since = self.budget_since.max(now - BUDGET_ACCRUAL_SECONDS);
        self.budget_since = since + bytes as f64 / rate;
    }

    /// Notes an interrupt fix on the VM of UUID `uuid`.
    pub fn record_irq(&mut self, uuid: &str, now: f64) {
        self.irq_acted.insert(uuid.to_string(), now);
    }

    /// Seeds the cooldowns from a record kept across restarts (the newest time wins).
    pub fn seed(&mut self, uuid: &str, memory: Option<f64>, irq: Option<f64>) {
        for (map, t) in [(&mut self.memory_acted, memory), (&mut self.irq_acted, irq)] {
            if let Some(t) = t {
                let e = map.entry(uuid.to_string()).or_insert(t);
                *e = e.max(t);
            }
        }
    }

    /// Forgets VMs that are gone.
    pub fn forget_gone(&mut self, vms: &[Vm]) {
        let running = |uuid: &String| vms.iter().any(|vm| &vm.uuid == uuid);
        self.memory_acted.retain(|u, _| running(u));
        self.irq_acted.retain(|u, _| running(u));
    }
}

/// Decides every fix of the host under `config`.
pub fn evaluate(config: &PolicyConfig, guards: &FixGuards, inputs: &FixInputs) -> FixPlan {
    let mut plan = FixPlan {
        irqbalance: inputs.irqbalance.cloned(),
        ..Default::default()
    };
    let mut allowance = guards.allowance(config.memory_bytes_per_second, inputs.now);
    for vm in inputs.vms.iter().filter(|vm| !vm.gpu_nodes.is_empty()) {
        if config.memory != FixMode::Off {
            if let Some(mut fix) = memory_fix(config, inputs, vm) {
                guard_memory(config, guards, inputs, &mut fix, &mut allowance);
                plan.memory.push(fix);
            }
        }
        if config.irq != FixMode::Off {
            for mut fix in irq_fixes(config, inputs, vm) {
                guard_irq(config, guards, inputs, &mut fix);
                plan.irq.push(fix);
            }
        }
    }
    plan
}

/// "policy.memory = recommend" or "policy.mode is not enforce", when only words are allowed.
fn words_only(mode: FixMode, key: &str, enforce: bool) -> Option<String> {
    match (mode, enforce) {
        (FixMode::Enforce, true) => None,
        (FixMode::Enforce, false) => Some(format!(
            "not acting: policy.{key} = \"enforce\" acts only under policy.mode = \"enforce\""
        )),
        _ => Some(format!(
            "not acting: policy.{key} = \"recommend\" (\"enforce\" applies it)"
        )),
    }
}

/// Why the VM is still cooling down after a fix at `last`, if it is.
fn cooling(last: Option<&f64>, cooldown: f64, now: f64) -> Option<String> {
    let since = now - last?;
    (since < cooldown)
        .then(|| format!("fixed {since:.0}s ago (policy.fix_cooldown_seconds = {cooldown})"))
}
