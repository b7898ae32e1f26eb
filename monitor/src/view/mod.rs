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
mod threads;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::accounting::{ByLocality, DomainTotals, VcpuTotals};
use crate::config::Mode;
use crate::cpuset::CpuSet;
use crate::inventory::{Gpu, Inventory, Vm};
use crate::policy::{Plan, Verdict};
use crate::probes::Moves;
use crate::topology::{Locality, Topology};
pub use interrupts::{GpuInterruptsView, IrqLineView};
pub use memory::{node_locality, MemoryView};
pub use overhead::{OverheadView, Part, Penalties};
pub use threads::RoleView;

mod topology;
pub use topology::{NodeView, SocketView, TopologyView};

/// A probe and whether it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Attached to its kernel event.
    pub attached: bool,
    /// Where it is attached, or why it was skipped.
    pub detail: String,
}

/// A probe program's run-time figures (with kernel.bpf_stats_enabled=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramView {
    /// Program name.
    pub program: String,
    /// Nanoseconds the kernel spent in it.
    pub run_time_ns: u64,
    /// Runs.
    pub run_count: u64,
}

/// A probe map's fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapView {
    /// Map name.
    pub map: String,
    /// Entries in use.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
}

/// The probes' side of the view, as the engine read it this tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbesView {
    /// Probe name -> state.
    pub probes: BTreeMap<String, ProbeView>,
    /// Per program, when bpf_stats is on.
    pub program_stats: Option<Vec<ProgramView>>,
    /// Per map.
    pub maps: Vec<MapView>,
    /// Failed map updates inside the probes.
    pub map_errors: u64,
    /// Switches of tracked threads the sched_switch tracepoint did not show.
    #[serde(default)]
    pub unseen_switches: u64,
}

/// KVM exits of one vCPU for one (locality, reason).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExitCount {
    /// Where the vCPU exited.
    pub locality: Locality,
    /// Exit reason label (a bounded set, "other" for the rest): borrowed from the probes'
    /// table when built, owned when read back from JSON (status asks the daemon for it).
    pub reason: std::borrow::Cow<'static, str>,
    /// Exits.
    pub count: u64,
}

/// One vCPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VcpuView {
    /// vCPU index.
    pub vcpu: u32,
    /// Host thread id (None: the vCPU's thread is no longer listed; its totals remain).
    pub tid: Option<u32>,
    /// CPUs the thread may run on now.
    pub allowed_cpus: CpuSet,
    /// Whether it may run on a socket that holds none of the VM's GPUs.
    pub allowed_on_far_socket: bool,
    /// On-CPU seconds by locality since pinsight started watching.
    pub run_seconds: ByLocality<f64>,
    /// Moves between sockets (the same as `migrations.socket`, kept for readers of this field).
    pub cross_socket_migrations: u64,
    /// Moves from CPU to CPU by scope (absent in views from before it existed).
    #[serde(default)]
    pub migrations: Moves,
    /// KVM exits by locality and reason.
    pub kvm_exits: Vec<ExitCount>,
    /// Remote share over the recent window (None: did not run, or no GPU).
    pub remote_ratio: Option<f64>,
    /// Whether the policy would move it (None: the policy did not evaluate its VM).
    pub repin_recommended: Option<bool>,
    /// Whether the probes account its thread; false when they cannot (maps full, probes
    /// not loaded), so a run time of 0 is never mistaken for an idle vCPU.
    pub measured: bool,
    /// On-CPU seconds by CPU id since the previous reading (the latest tick): where it ran
    /// just now. Empty when it did not run (or is not measured).
    #[serde(default)]
    pub recent_cpus: BTreeMap<u32, f64>,
}

/// The policy's verdict on one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyView {
    /// What it concluded.
    pub verdict: Verdict,
    /// Why, naming the rule and the figures.
    pub reason: String,
}

/// One VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    /// Domain name.
    pub domain: String,
    /// Domain UUID.
    pub uuid: String,
    /// QEMU process id.
    pub pid: u32,
    /// Which VMM runs it.
    #[serde(default)]
    pub vmm: crate::inventory::Vmm,
    /// GPUs with their nodes.
    pub gpus: Vec<Gpu>,
    /// Distinct NUMA nodes of the GPUs, ascending.
    pub gpu_nodes: Vec<u32>,
    /// Nova instance name, when Nova manages the VM.
    pub nova_instance: Option<String>,
    /// Nova project name.
    pub nova_project: Option<String>,
    /// On-CPU seconds of all vCPUs by locality.
    pub run_seconds: ByLocality<f64>,
    /// KVM exits of all vCPUs by locality.
    pub kvm_exits: ByLocality<u64>,
    /// Remote share over the recent window (see `accounting::DomainTotals::remote_ratio`).
    pub remote_ratio: Option<f64>,
    /// Per vCPU, by index.
    pub vcpus: Vec<VcpuView>,
    /// The repin policy's verdict now, when it evaluated the VM.
    pub policy: Option<PolicyView>,
    /// pinsight's last action on the VM, from its state metadata, or why that is unreadable.
    pub last_action: Option<String>,
    /// Repin decisions by result label (pinsight_repins_total).
    pub repins: BTreeMap<String, u64>,
    /// The host interrupt lines of each GPU that has any (vfio-pci).
    #[serde(default)]
    pub gpu_interrupts: Vec<GpuInterruptsView>,
    /// Where its memory sits; `None` when its memory cgroup could not be read.
    #[serde(default)]
    pub memory: Option<MemoryView>,
    /// The overhead estimate by part; `None` without GPUs or any measured part.
    #[serde(default)]
    pub overhead: Option<OverheadView>,
    /// libvirt's memory policy (`<numatune><memory>`): mode, and nodeset when not automatic.
    #[serde(default)]
    pub numatune: Option<(String, Option<String>)>,
    /// The QEMU process's threads by role (vCPUs, emulator, IOThreads, other).
    #[serde(default)]
    pub threads: Vec<RoleView>,
    /// Remote share of the emulator's and IOThreads' run time over the recent window (see
    /// `accounting::DomainTotals::emulator_remote_ratio`).
    #[serde(default)]
    pub emulator_remote_ratio: Option<f64>,
}

impl VmView {
    /// The GPUs with their nodes, comma-separated ("0000:3b:00.0@node1"), or None.
    pub fn gpu_list(&self) -> Option<String> {
        let gpus: Vec<String> = self.gpus.iter().map(Gpu::to_string).collect();
        (!gpus.is_empty()).then(|| gpus.join(", "))
    }

    /// Whether the VM has a GPU on a node the topology knows.
    pub fn has_gpu(&self) -> bool {
        !self.gpu_nodes.is_empty()
    }
}

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
                let mut view = vm_view(vm, totals, inputs.topology, measured);
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

/// One VM's view from its inventory entry and accounting totals. vCPUs are those the
/// accounting knows (departed threads keep their totals) plus any listed but not yet read.
fn vm_view(
    vm: &Vm,
    totals: &DomainTotals,
    topology: &Topology,
    measured: impl Fn(Option<u32>) -> bool,
) -> VmView {
    let mut indexes: Vec<u32> = totals.vcpus.keys().copied().collect();
    indexes.extend(vm.vcpus.iter().map(|t| t.vcpu));
    indexes.sort_unstable();
    indexes.dedup();
    let none = VcpuTotals::default();
    let vcpus = indexes
        .into_iter()
        .map(|index| {
            let thread = vm.vcpus.iter().find(|t| t.vcpu == index);
            // Borrowed: of its maps only the CPUs it just ran on are copied, below.
            let t = totals.vcpus.get(&index).unwrap_or(&none);
            let allowed_cpus = thread.map(|t| t.allowed_cpus.clone()).unwrap_or_default();
            VcpuView {
                vcpu: index,
                tid: thread.map(|t| t.tid),
                allowed_on_far_socket: topology.allows_far_socket(&allowed_cpus, &vm.gpu_nodes),
                allowed_cpus,
                run_seconds: t.run_seconds,
                cross_socket_migrations: t.moves.socket,
                migrations: t.moves,
                kvm_exits: t
                    .exits
                    .iter()
                    .map(|((locality, reason), count)| ExitCount {
                        locality: *locality,
                        reason: std::borrow::Cow::Borrowed(reason),
                        count: *count,
                    })
                    .collect(),
                remote_ratio: t.remote_ratio,
                repin_recommended: None,
                measured: measured(thread.map(|t| t.tid)),
                recent_cpus: t.last_cpu_seconds.clone(),
            }
        })
        .collect();
    let nova = vm.spec.nova.as_ref();
    VmView {
        domain: vm.name.clone(),
        uuid: vm.uuid.clone(),
        pid: vm.pid,
        vmm: vm.vmm,
        gpus: vm.gpus.clone(),
        gpu_nodes: vm.gpu_nodes.clone(),
        nova_instance: nova.and_then(|n| n.instance_name.clone()),
        nova_project: nova.and_then(|n| n.project_name.clone()),
        run_seconds: totals.run_seconds(),
        kvm_exits: totals.exits_by_locality(),
        remote_ratio: totals.remote_ratio,
        vcpus,
        policy: None,
        last_action: last_action(vm),
        overhead: None,
        numatune: vm
            .spec
            .numatune
            .as_ref()
            .map(|n| (n.mode.clone(), n.nodeset.clone())),
        repins: BTreeMap::new(),
        gpu_interrupts: Vec::new(),
        memory: None,
        threads: threads::roles(vm, totals),
        emulator_remote_ratio: totals.emulator_remote_ratio,
    }
}

/// pinsight's last action on `vm` in one line, or what is wrong with its record.
fn last_action(vm: &Vm) -> Option<String> {
    match vm.spec.state_record.as_ref()? {
        Ok(record) => record.last.as_ref().map(crate::policy::record::describe),
        Err(e) => Some(format!("unreadable: {e}")),
    }
}

#[cfg(test)]
mod tests;
