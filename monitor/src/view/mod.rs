//! The one typed view of the host that the engine publishes after every tick.
//!
//! Sources (topology, inventory, probes) are read and accounted by the engine; from them it
//! builds one [`HostView`] per tick: per host, VM, vCPU thread: run time and exits by
//! locality, allowed CPUs, GPUs, the policy's verdict and pinsight's last action. /metrics,
//! /, /status.json, `pinsight status` and `pinsight plan` all read this view and never write
//! it; /status.json is this view serialized.

mod interrupts;
mod memory;
mod overhead;
mod probes;
mod threads;
mod vm;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::accounting::DomainTotals;
use crate::config::Mode;
use crate::inventory::Inventory;
use crate::policy::Plan;
use crate::topology::Topology;
pub use interrupts::{GpuInterruptsView, IrqLineView};
pub use memory::{node_locality, MemoryView};
pub use overhead::{OverheadView, Part, Penalties};
pub use probes::{DepthFilterView, MapView, ProbeView, ProbesView, ProgramView};
pub use threads::RoleView;
pub use vm::{ExitCount, PolicyView, VcpuView, VmView};

mod topology;
pub use topology::{NodeView, SocketView, TopologyView};

/// The whole host, as of one tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    /// pinsight version.
    pub version: String,
    /// Ticks done when this view was built (0: nothing measured yet).
    pub tick: u64,
    /// The repin policy's mode.
    pub mode: Mode,
    /// Whether libvirt answered its last call within the deadline.
    pub libvirt_up: bool,
    /// When this view was built (Unix seconds): a reader that sees it stop moving knows the
    /// engine stopped ticking.
    #[serde(default)]
    pub tick_unix_seconds: f64,
    /// When libvirt last gave a whole inventory (Unix seconds); `None` before the first.
    #[serde(default)]
    pub inventory_unix_seconds: Option<f64>,
    /// Why the policy is not deciding now (libvirt down, or its inventory stale); `None`
    /// while it runs or in observe mode.
    #[serde(default)]
    pub policy_paused: Option<String>,
    /// The probes.
    pub probes: ProbesView,
    /// Whether per-vCPU metric families are exported.
    pub per_vcpu_metrics: bool,
    /// Penalties of the overhead estimate's parts.
    #[serde(default)]
    pub penalties: Penalties,
    /// Most VMs the per-VM metric families show (the first by name); the view has them all.
    pub max_exported_vms: usize,
    /// Running VMs, by name.
    pub vms: Vec<VmView>,
    /// Problems found in the last scan (and probes that could not be loaded).
    pub problems: Vec<String>,
    /// The host's sockets, nodes, cores and GPUs (the placement map at `/` draws it).
    #[serde(default)]
    pub topology: TopologyView,
    /// Node-to-node memory figures from `pinsight calibrate`, when there is a file.
    #[serde(default)]
    pub calibration: Option<crate::calibration::Calibration>,
    /// The memory and interrupt fixes (recommend / enforce modes).
    #[serde(default)]
    pub fixes: Option<crate::policy::fixes::FixesView>,
}

/// What one view is built from.
pub struct ViewInputs<'a> {
    /// The host.
    pub topology: &'a Topology,
    /// The VMs, with each thread's allowed CPUs as last read.
    pub inventory: &'a Inventory,
    /// Accounting totals per domain.
    pub totals: &'a BTreeMap<String, DomainTotals>,
    /// The probes' state.
    pub probes: ProbesView,
    /// Whether libvirt answered.
    pub libvirt_up: bool,
    /// When the view is built (Unix seconds).
    pub tick_unix_seconds: f64,
    /// When libvirt last gave a whole inventory (Unix seconds).
    pub inventory_unix_seconds: Option<f64>,
    /// Policy mode.
    pub mode: Mode,
    /// Export per-vCPU families.
    pub per_vcpu_metrics: bool,
    /// Penalties of the overhead estimate's parts.
    pub penalties: Penalties,
    /// Most VMs exported on /metrics.
    pub max_exported_vms: usize,
    /// Tick number.
    pub tick: u64,
    /// Problems beyond the inventory's (probes not loaded).
    pub extra_problems: Vec<String>,
    /// Whether run time is measured at all (the sched_switch probe is attached).
    pub measuring: bool,
    /// vCPU threads the probes could not take on, by tid.
    pub unmeasured_tids: BTreeSet<u32>,
    /// The host's vfio-pci interrupt lines.
    pub interrupts: &'a crate::interrupts::VfioInterrupts,
    /// Each VM's resident bytes per NUMA node, by domain name.
    pub memory: &'a BTreeMap<String, crate::memory::Resident>,
    /// Node-to-node memory figures from `pinsight calibrate`.
    pub calibration: Option<&'a crate::calibration::Calibration>,
}

impl HostView {
    /// The view of one tick, before the policy's verdicts (see [`HostView::set_policy`]).
    pub fn build(inputs: ViewInputs) -> HostView {
        let empty = DomainTotals::default();
        let vms = inputs
            .inventory
            .vms
            .iter()
            .map(|vm| {
                let totals = inputs.totals.get(&vm.name).unwrap_or(&empty);
                let measured = |tid: Option<u32>| {
                    inputs.measuring && tid.is_some_and(|t| !inputs.unmeasured_tids.contains(&t))
                };
                let mut view = vm::vm_view(vm, totals, inputs.topology, measured);
                view.gpu_interrupts =
                    interrupts::gpu_interrupts(vm, inputs.topology, inputs.interrupts);
                view.memory = inputs
                    .memory
                    .get(&vm.name)
                    .map(|bytes| memory::memory_view(vm, inputs.topology, bytes));
                view.overhead = overhead::estimate(&view, &inputs.penalties);
                view
            })
            .collect();
        let mut problems = inputs.inventory.problems.clone();
        problems.extend(inputs.extra_problems);
        HostView {
            version: env!("CARGO_PKG_VERSION").into(),
            tick: inputs.tick,
            mode: inputs.mode,
            libvirt_up: inputs.libvirt_up,
            tick_unix_seconds: inputs.tick_unix_seconds,
            inventory_unix_seconds: inputs.inventory_unix_seconds,
            policy_paused: None,
            probes: inputs.probes,
            per_vcpu_metrics: inputs.per_vcpu_metrics,
            penalties: inputs.penalties,
            max_exported_vms: inputs.max_exported_vms,
            vms,
            problems,
            topology: TopologyView::of(inputs.topology),
            calibration: inputs.calibration.cloned(),
            fixes: None,
        }
    }

    /// Adds the policy's verdicts, recommendations and repin counts.
    pub fn set_policy(&mut self, plan: &Plan, repins: &BTreeMap<(String, &'static str), u64>) {
        for vm in &mut self.vms {
            let decision = plan.decisions.iter().find(|d| d.domain == vm.domain);
            vm.policy = decision.map(|d| PolicyView {
                verdict: d.verdict,
                reason: d.reason.clone(),
            });
            for v in &mut vm.vcpus {
                v.repin_recommended = decision.map(|d| d.recommends_moving(v.vcpu));
            }
            vm.repins = repins
                .iter()
                .filter(|((domain, _), _)| *domain == vm.domain)
                .map(|((_, result), n)| (result.to_string(), *n))
                .collect();
        }
    }

    /// The VM named `domain`.
    pub fn vm(&self, domain: &str) -> Option<&VmView> {
        self.vms.iter().find(|vm| vm.domain == domain)
    }

    /// The remote share of every vCPU that has one, by (domain, vCPU): the policy's input.
    pub fn vcpu_remote_ratios(&self) -> BTreeMap<(String, u32), f64> {
        self.vms
            .iter()
            .flat_map(|vm| {
                vm.vcpus
                    .iter()
                    .filter_map(|v| Some(((vm.domain.clone(), v.vcpu), v.remote_ratio?)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
