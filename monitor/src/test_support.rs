//! Helpers every unit test shares: fixture paths, CPU sets, a [`VmBuilder`] and the
//! operator's metadata element. Compiled only for tests.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::accounting::DomainTotals;
use crate::cpuset::CpuSet;
use crate::inventory::{DomainSpec, Gpu, GpuSource, Inventory, VcpuThread, Vm};
use crate::topology::Topology;
use crate::view::ViewInputs;

/// `monitor/tests/fixtures/<rel>`.
pub fn fixture_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// The sysfs-shaped fixture topology `name` (tests/fixtures/sysfs/NAME).
pub fn topo(name: &str) -> Topology {
    let root = fixture_path("sysfs").join(name);
    Topology::read(&root).unwrap_or_else(|e| panic!("fixture topology {name}: {e}"))
}

/// A domain XML fixture's text (tests/fixtures/domains/NAME).
pub fn domain_xml(name: &str) -> String {
    let path = fixture_path("domains").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A temporary config file holding `text`, removed when the returned path drops.
pub fn config_file(text: &str) -> tempfile::TempPath {
    let file = tempfile::Builder::new()
        .prefix("pinsight-unit-")
        .suffix(".toml")
        .tempfile()
        .unwrap_or_else(|e| panic!("cannot create a temporary config: {e}"));
    std::fs::write(file.path(), text).unwrap_or_else(|e| panic!("cannot write it: {e}"));
    file.into_temp_path()
}

/// A CPU set from its list form.
pub fn cpus(list: &str) -> CpuSet {
    list.parse()
        .unwrap_or_else(|e| panic!("bad CPU list in a test: {e}"))
}

/// The operator's `urn:pinsight:domain:1` element declaring `gpu`, plus `extra` children.
pub fn operator_metadata(gpu: &str, extra: &str) -> String {
    format!(
        "<pinsight:domain xmlns:pinsight=\"urn:pinsight:domain:1\">\
         <pinsight:gpu address=\"{gpu}\"/>{extra}</pinsight:domain>"
    )
}

/// A host without vfio-pci interrupt lines.
pub static NO_INTERRUPTS: crate::interrupts::VfioInterrupts = crate::interrupts::VfioInterrupts {
    by_device: std::collections::BTreeMap::new(),
};

/// No VM memory read.
pub static NO_MEMORY: std::collections::BTreeMap<String, crate::memory::Resident> =
    std::collections::BTreeMap::new();

/// The inputs of a view of `vms` with `totals` on the two-socket fixture (libvirt up, tick 1,
/// per-vCPU families on, the default 3% penalty); change fields before building.
pub fn view_inputs<'a>(
    topology: &'a Topology,
    inventory: &'a Inventory,
    totals: &'a BTreeMap<String, DomainTotals>,
) -> ViewInputs<'a> {
    ViewInputs {
        topology,
        inventory,
        totals,
        probes: Default::default(),
        libvirt_up: true,
        tick_unix_seconds: 1_800_000_000.0,
        inventory_unix_seconds: Some(1_799_999_998.0),
        mode: Default::default(),
        per_vcpu_metrics: true,
        penalties: crate::view::Penalties::default(),
        calibration: None,
        max_exported_vms: 1000,
        tick: 1,
        extra_problems: Vec::new(),
        measuring: true,
        unmeasured_tids: Default::default(),
        interrupts: &NO_INTERRUPTS,
        memory: &NO_MEMORY,
    }
}

/// Builds a [`Vm`] as the inventory would: vCPU i allowed on the i-th list, tid 100 + i.
pub struct VmBuilder {
    vm: Vm,
}

impl VmBuilder {
    /// A VM named `name` with no vCPUs, no GPUs and an empty spec.
    pub fn new(name: &str) -> VmBuilder {
        VmBuilder {
            vm: Vm {
                name: name.into(),
                uuid: format!("uuid-{name}"),
                pid: 1,
                vcpus: Vec::new(),
                threads: Vec::new(),
                gpus: Vec::new(),
                gpu_nodes: Vec::new(),
                spec: DomainSpec {
                    name: name.into(),
                    uuid: format!("uuid-{name}"),
                    ..DomainSpec::default()
                },
                vmm: crate::inventory::Vmm::Libvirt,
            },
        }
    }

    /// vCPU i may run on `allowed[i]`.
    pub fn vcpus(mut self, allowed: &[&str]) -> VmBuilder {
        self.vm.vcpus = allowed
            .iter()
            .enumerate()
            .map(|(i, a)| VcpuThread {
                vcpu: i as u32,
                tid: 100 + i as u32,
                allowed_cpus: cpus(a),
                start_time: 1,
            })
            .collect();
        self.vm.spec.vcpus = allowed.len() as u32;
        self
    }

    /// The QEMU process's other threads: (tid, role).
    pub fn threads(mut self, threads: &[(u32, crate::inventory::ThreadRole)]) -> VmBuilder {
        self.vm.threads = threads
            .iter()
            .map(|&(tid, role)| crate::inventory::HostThread {
                tid,
                role,
                name: role.as_str().into(),
                allowed_cpus: CpuSet::default(),
                start_time: 1,
            })
            .collect();
        self
    }

    /// GPUs on these nodes (nodes only, as the policy sees them).
    pub fn gpu_nodes(mut self, nodes: &[u32]) -> VmBuilder {
        self.vm.gpu_nodes = nodes.to_vec();
        self
    }

    /// A declared GPU at `address` on `node`.
    pub fn gpu(mut self, address: &str, node: u32) -> VmBuilder {
        self.vm.gpus.push(Gpu {
            address: address.into(),
            node: Some(node),
            source: GpuSource::Declared,
        });
        if !self.vm.gpu_nodes.contains(&node) {
            self.vm.gpu_nodes.push(node);
            self.vm.gpu_nodes.sort_unstable();
        }
        self
    }

    /// pinsight's state element (`urn:pinsight:state:1`) as read from the domain XML.
    pub fn state(mut self, xml: &str) -> VmBuilder {
        self.vm.spec.set_state(xml);
        self
    }

    /// The VM.
    pub fn build(self) -> Vm {
        self.vm
    }
}
