//! A VM's GPU interrupts in the view: per GPU, its vfio-pci lines' counts by locality to the
//! GPU's own node and the lines delivered off that node.

use serde::{Deserialize, Serialize};

use crate::accounting::ByLocality;
use crate::interrupts::{IrqKind, VfioInterrupts};
use crate::inventory::Vm;
use crate::topology::{normalize_pci_address, Locality, Topology};

/// The host interrupt lines of one GPU of a VM.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GpuInterruptsView {
    /// The GPU's PCI address.
    pub gpu: String,
    /// Interrupts handled since boot, by the handling CPU's locality to the GPU's node.
    pub handled: ByLocality<u64>,
    /// Each line: IRQ, kind, where it is delivered, whether that is off the GPU's node.
    pub lines: Vec<IrqLineView>,
}

/// One interrupt line of a GPU.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IrqLineView {
    /// Host IRQ number.
    pub irq: u32,
    /// MSI-X, MSI or INTx.
    pub kind: IrqKind,
    /// The CPUs it is delivered to (effective affinity, else the configured one), as a list.
    pub delivered_to: Option<String>,
    /// Delivered to no CPU of the GPU's node (an interrupt that crosses the socket each time).
    pub misplaced: bool,
}

impl GpuInterruptsView {
    /// Lines delivered off the GPU's node.
    pub fn misplaced(&self) -> usize {
        self.lines.iter().filter(|l| l.misplaced).count()
    }
}

/// The interrupt lines of each GPU of `vm` that has any.
pub fn gpu_interrupts(
    vm: &Vm,
    topology: &Topology,
    interrupts: &VfioInterrupts,
) -> Vec<GpuInterruptsView> {
    vm.gpus
        .iter()
        .filter_map(|gpu| {
            let address = normalize_pci_address(&gpu.address)?;
            let lines = interrupts.by_device.get(&address)?;
            let nodes: Vec<u32> = gpu.node.into_iter().collect();
            let node_cpus = topology.node_cpus(&nodes);
            let mut view = GpuInterruptsView {
                gpu: address,
                ..Default::default()
            };
            for line in lines {
                for (&cpu, &count) in &line.per_cpu {
                    let locality = match gpu.node {
                        Some(_) => topology.locality(cpu, &nodes),
                        None => Locality::None,
                    };
                    *view.handled.get_mut(locality) += count;
                }
                let delivered = line.delivered_to();
                view.lines.push(IrqLineView {
                    irq: line.irq,
                    kind: line.kind,
                    delivered_to: delivered.map(ToString::to_string),
                    misplaced: gpu.node.is_some()
                        && delivered.is_some_and(|d| d.intersection(&node_cpus).is_empty()),
                });
            }
            Some(view)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{topo, VmBuilder};

    fn lines() -> VfioInterrupts {
        crate::interrupts::read(&crate::test_support::fixture_path("proc/two-socket-gpu")).unwrap()
    }

    #[test]
    fn counts_by_locality_to_the_gpus_node_and_flags_lines_delivered_off_it() {
        let topology = topo("two-socket-gpu");
        let vm = VmBuilder::new("vm").gpu("0000:3b:00.0", 1).build();
        let views = gpu_interrupts(&vm, &topology, &lines());
        assert_eq!(views.len(), 1);
        let v = &views[0];
        assert_eq!((v.handled.local, v.handled.remote), (5250, 1010));
        assert_eq!(v.misplaced(), 1);
        assert_eq!(v.lines[0].delivered_to.as_deref(), Some("0"));
        assert!(v.lines[0].misplaced && !v.lines[1].misplaced);
    }

    #[test]
    fn a_gpu_without_lines_or_node_is_shown_honestly() {
        let topology = topo("two-socket-gpu");
        // No vfio line for this device: no entry at all (not a zero).
        let other = VmBuilder::new("vm").gpu("0000:af:00.0", 1).build();
        assert!(gpu_interrupts(&other, &topology, &lines()).is_empty());
        // A GPU whose node is unknown: counts under none, nothing called misplaced.
        let mut vm = VmBuilder::new("vm").gpu("0000:3b:00.0", 1).build();
        vm.gpus[0].node = None;
        let v = &gpu_interrupts(&vm, &topology, &lines())[0];
        assert_eq!(v.handled.none, 6260);
        assert_eq!(v.misplaced(), 0);
    }
}
