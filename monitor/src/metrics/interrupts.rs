//! The GPUs' host interrupt lines (vfio-pci): interrupts handled by locality to the GPU's
//! node, and lines delivered off that node.

use prometheus::proto::MetricType;

use super::text::{bounded_label, Family};
use crate::view::VmView;

/// The interrupt families of the exported VMs.
pub(super) fn families(vms: &[VmView], cut: &mut u64) -> Vec<Family> {
    let mut handled = Family::new(
        "pinsight_gpu_interrupts_total",
        MetricType::COUNTER,
        "Host interrupts of a GPU's vfio-pci lines (/proc/interrupts) by locality of the handling CPU to the GPU's node. Posted interrupts (VT-d PI, AVIC) reach the vCPU without the host and are not counted.",
    );
    let mut misplaced = Family::new(
        "pinsight_gpu_irq_affinity_misplaced",
        MetricType::GAUGE,
        "Interrupt lines of a GPU delivered to no CPU of its NUMA node (effective affinity, else smp_affinity_list).",
    );
    let mut lines = Family::new(
        "pinsight_gpu_interrupt_lines",
        MetricType::GAUGE,
        "vfio-pci interrupt lines (MSI-X, MSI, INTx) the host has for a GPU.",
    );
    for vm in vms {
        for gpu in &vm.gpu_interrupts {
            let labels = vec![
                ("domain", bounded_label(&vm.domain, cut)),
                ("gpu", bounded_label(&gpu.gpu, cut)),
            ];
            for (locality, count) in gpu.handled.iter() {
                let mut l = labels.clone();
                l.push(("locality", locality.as_str().to_string()));
                handled.push(l, count as f64);
            }
            misplaced.push(labels.clone(), gpu.misplaced() as f64);
            lines.push(labels, gpu.lines.len() as f64);
        }
    }
    vec![handled, misplaced, lines]
}
