//! The repin policy: decides, for every VM with a GPU, whether its vCPUs are misplaced and
//! where they should go, with hysteresis, per-VM cooldown, a host-wide rate limit, capacity
//! checks, per-VM opt-out and orchestrator detection. Pure decisions: the daemon acts on them
//! through `remediate`, `pinsight plan` prints them.

mod decide;
pub mod fixes;
pub mod placement;
pub mod record;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::config::PolicyConfig;
use crate::cpuset::CpuSet;
use crate::inventory::Vm;
use crate::topology::Topology;

/// Why a vCPU counts as misplaced.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Trigger {
    /// Its remote share over the window reached `remote_ratio_high` and has not yet fallen
    /// to `remote_ratio_clear`.
    RemoteRatio {
        /// The share now.
        ratio: f64,
    },
    /// It may run on CPUs of a socket without the VM's GPUs (proactive rule).
    AllowedFarSocket {
        /// Those CPUs.
        far_cpus: CpuSet,
    },
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Trigger::RemoteRatio { ratio } => write!(f, "remote share {ratio:.2}"),
            Trigger::AllowedFarSocket { far_cpus } => {
                write!(f, "may run on far-socket CPUs {far_cpus}")
            }
        }
    }
}

/// One misplaced vCPU.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VcpuMove {
    /// vCPU index.
    pub vcpu: u32,
    /// CPUs it may run on now.
    pub before: CpuSet,
    /// CPUs it should be pinned to; `None` when there is no target (see the verdict).
    pub after: Option<CpuSet>,
    /// Why it is misplaced.
    pub trigger: Trigger,
}

/// The emulator threads' move.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmulatorMove {
    /// CPUs they may run on now.
    pub before: CpuSet,
    /// CPUs they go to.
    pub after: CpuSet,
}

/// What the policy concludes for one VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing misplaced.
    Placed,
    /// Repin now (enforce acts; recommend only says so).
    Repin,
    /// The operator opted the VM out (or did not opt it in under `opt_in`).
    SkippedOptout,
    /// An orchestrator owns the pins (Nova metadata plus `<cputune><vcpupin>`).
    SkippedOrchestrator,
    /// The GPU's node(s) have no room.
    NoCapacity,
    /// Acted on recently.
    SkippedCooldown,
    /// The host-wide rate limit is used up.
    RateLimited,
    /// pinsight's state element cannot be read, so a change could not be undone.
    Unrecorded,
    /// Someone else changed the pins pinsight left (`policy.reassert` off): left alone.
    SkippedOperator,
    /// pinsight stopped in the middle of an action on this VM; it is reconciled (enforce
    /// mode) before anything else is decided.
    Interrupted,
}

impl Verdict {
    /// The `result` label of pinsight_repins_total, for verdicts that are counted.
    pub fn result_label(self) -> Option<&'static str> {
        match self {
            Verdict::Placed | Verdict::Repin | Verdict::Interrupted => None,
            Verdict::SkippedOptout => Some("skipped_optout"),
            Verdict::SkippedOrchestrator => Some("skipped_orchestrator"),
            Verdict::NoCapacity => Some("no_capacity"),
            Verdict::SkippedCooldown => Some("skipped_cooldown"),
            Verdict::RateLimited => Some("rate_limited"),
            Verdict::Unrecorded => Some("failed"),
            Verdict::SkippedOperator => Some("skipped_operator"),
        }
    }

    /// A short name for people and /status.json: "ok", "repin", or the result label.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Placed => "ok",
            Verdict::Repin => "repin",
            Verdict::Interrupted => "interrupted",
            other => other.result_label().unwrap_or("failed"),
        }
    }

    /// Whether enforce would move the VM once the wait is over (a target exists).
    pub fn recommends_move(self) -> bool {
        matches!(
            self,
            Verdict::Repin | Verdict::SkippedCooldown | Verdict::RateLimited
        )
    }
}

/// The policy's conclusion for one VM with GPUs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmDecision {
    /// Domain name.
    pub domain: String,
    /// NUMA nodes of its GPUs.
    pub gpu_nodes: Vec<u32>,
    /// What to do.
    pub verdict: Verdict,
    /// Why, in words (names the rule, the figures and the CPU sets).
    pub reason: String,
    /// Its misplaced vCPUs with before/after.
    pub vcpus: Vec<VcpuMove>,
    /// The emulator threads' move, when they go too.
    pub emulator: Option<EmulatorMove>,
    /// True the first time this verdict is reached for this VM in this situation (logged and
    /// counted then, not on every tick).
    #[serde(skip)]
    pub new: bool,
}

impl VmDecision {
    /// Whether enforce would move vCPU `vcpu` (now, or once a cooldown or the rate limit
    /// allows): `pinsight_repin_recommended`.
    pub fn recommends_moving(&self, vcpu: u32) -> bool {
        self.verdict.recommends_move() && self.vcpus.iter().any(|m| m.vcpu == vcpu)
    }
}

/// What the policy concludes for the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Plan {
    /// One decision per VM with GPUs, by domain name.
    pub decisions: Vec<VmDecision>,
}

/// What a decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// Running VMs.
    pub vms: &'a [Vm],
    /// Remote share per (domain, vCPU) over the window; absent: unknown (idle or no reading).
    pub ratios: &'a BTreeMap<(String, u32), f64>,
    /// Unix time, seconds.
    pub now: f64,
}

/// Unix time now, in seconds (the clock of cooldowns and of the state element).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The policy's memory between evaluations.
#[derive(Debug, Clone)]
pub struct Policy {
    config: PolicyConfig,
    /// Hysteresis: (domain, vCPU) -> its last remote share, from crossing `remote_ratio_high`
    /// until falling to `remote_ratio_clear` (absent: not misplaced by its share).
    hot: BTreeMap<(String, u32), f64>,
    /// Last action per domain UUID in this process (the state element carries it across
    /// restarts); by UUID, so a VM re-created under the same name starts without a cooldown.
    acted: BTreeMap<String, f64>,
    /// Times of recent actions on the host, oldest first.
    actions: VecDeque<f64>,
    /// What was last reported per domain, so each situation is logged and counted once.
    reported: BTreeMap<String, String>,
}

impl Policy {
    /// A policy with no history.
    pub fn new(config: PolicyConfig) -> Policy {
        Policy {
            config,
            hot: BTreeMap::new(),
            acted: BTreeMap::new(),
            actions: VecDeque::new(),
            reported: BTreeMap::new(),
        }
    }

    /// New settings (a reload); hysteresis, cooldowns and the rate limit's history stay.
    pub fn set_config(&mut self, config: PolicyConfig) {
        self.config = config;
    }

    /// The settings.
    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Decides for every VM with GPUs. Updates the hysteresis state and what was reported;
    /// records no action (see [`Policy::record_action`]).
    pub fn evaluate(&mut self, inputs: &Inputs) -> Plan {
        self.forget_gone(inputs.vms);
        decide::evaluate(self, inputs)
    }

    /// Notes that the daemon acted (or tried to) on the domain of UUID `uuid` at `now`: starts
    /// its cooldown and uses one unit of the rate limit.
    pub fn record_action(&mut self, uuid: &str, now: f64) {
        self.acted.insert(uuid.to_string(), now);
        self.actions.push_back(now);
    }

    fn forget_gone(&mut self, vms: &[Vm]) {
        let running = |name: &str| vms.iter().any(|vm| vm.name == name);
        self.hot.retain(|(domain, _), _| running(domain));
        self.acted
            .retain(|uuid, _| vms.iter().any(|vm| &vm.uuid == uuid));
        self.reported.retain(|domain, _| running(domain));
    }
}
