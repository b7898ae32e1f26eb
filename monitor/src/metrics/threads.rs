//! A VM's QEMU threads by role: how many, and their run time by locality to the GPUs.

use prometheus::proto::MetricType;

use super::text::{bounded_label, Family};
use super::vms::shown_localities;
use crate::view::VmView;

/// The thread families of the exported VMs.
pub(super) fn families(vms: &[VmView], cut: &mut u64) -> Vec<Family> {
    let mut run = Family::new(
        "pinsight_domain_thread_run_seconds_total",
        MetricType::COUNTER,
        "On-CPU time of a VM's QEMU threads by role and by locality of the CPU to the VM's GPUs. role: vcpu (\"CPU N/KVM\", the same time as pinsight_domain_run_seconds_total), emulator (the main thread: QEMU's main loop), iothread (\"IO <id>\": libvirt's <iothreads> and QEMU's monitor IOThread), other (call_rcu, workers, KVM's NX recovery thread; short-lived workers are counted from the rescan that sees them).",
    );
    let mut count = Family::new(
        "pinsight_domain_threads",
        MetricType::GAUGE,
        "Threads of a VM's QEMU process by role (as in pinsight_domain_thread_run_seconds_total), as of the last rescan.",
    );
    for vm in vms {
        let domain = bounded_label(&vm.domain, cut);
        for role in &vm.threads {
            let labels = |extra: Option<&str>| {
                let mut labels = vec![
                    ("domain", domain.clone()),
                    ("role", role.role.as_str().to_string()),
                ];
                if let Some(locality) = extra {
                    labels.push(("locality", locality.to_string()));
                }
                labels
            };
            count.push(labels(None), role.threads as f64);
            for (l, x) in shown_localities(vm.has_gpu(), &role.run_seconds) {
                run.push(labels(Some(l.as_str())), x);
            }
        }
    }
    vec![run, count]
}
