//! One VM's view and its vCPUs': run time and exits by locality, allowed CPUs, GPUs, the
//! policy's verdict and pinsight's last action, built from its inventory entry and its
//! accounting totals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{threads, GpuInterruptsView, MemoryView, OverheadView, RoleView};
use crate::accounting::{ByLocality, DomainTotals, VcpuTotals};
use crate::cpuset::CpuSet;
use crate::inventory::{Gpu, Vm};
use crate::policy::Verdict;
use crate::probes::Moves;
use crate::topology::{Locality, Topology};

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

/// One VM's view from its inventory entry and accounting totals. vCPUs are those the
/// accounting knows (departed threads keep their totals) plus any listed but not yet read.
pub(super) fn vm_view(
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
