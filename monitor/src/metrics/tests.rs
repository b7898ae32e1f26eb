//! The exposition's switches and bounds: per-vCPU families off, hostile labels, the VM cap.

use std::collections::BTreeMap;

use super::*;
use crate::accounting::{ByLocality, DomainTotals, VcpuTotals};
use crate::inventory::Inventory;
use crate::test_support::{topo, view_inputs, VmBuilder};
use crate::topology::Locality;
use crate::view::ViewInputs;

fn view(per_vcpu_metrics: bool) -> HostView {
    let vcpu = VcpuTotals {
        run_seconds: ByLocality {
            local: 1.0,
            remote: 3.0,
            ..Default::default()
        },
        exits: BTreeMap::from([((Locality::Remote, "io"), 7)]),
        ..Default::default()
    };
    let mut totals = DomainTotals {
        remote_ratio: Some(0.75),
        ..Default::default()
    };
    totals.vcpus.insert(0, vcpu);
    let inventory = Inventory {
        vms: vec![VmBuilder::new("vm").vcpus(&["0-1"]).gpu_nodes(&[1]).build()],
        problems: Vec::new(),
    };
    let (topology, totals) = (
        topo("two-socket-gpu"),
        BTreeMap::from([("vm".into(), totals)]),
    );
    HostView::build(ViewInputs {
        per_vcpu_metrics,
        ..view_inputs(&topology, &inventory, &totals)
    })
}

#[test]
fn per_vcpu_series_can_be_switched_off_while_per_domain_families_remain() {
    let with = render(&view(true));
    let without = render(&view(false));
    assert!(with.contains("pinsight_vcpu_run_seconds_total{"));
    assert!(with.contains("pinsight_vcpu_kvm_exits_total{"));
    assert!(!without.contains("pinsight_vcpu_"), "{without}");
    for family in [
        "pinsight_domain_run_seconds_total{domain=\"vm\",locality=\"remote\"} 3",
        "pinsight_domain_kvm_exits_total{domain=\"vm\",locality=\"remote\"} 7",
        "pinsight_domain_remote_ratio{domain=\"vm\"} 0.75",
    ] {
        assert!(without.contains(family), "missing {family} in:\n{without}");
    }
}

#[test]
fn hostile_label_values_are_cut_distinct_and_counted_and_the_vm_count_is_capped() {
    let long = |tail: &str| format!("{}{tail}", "x".repeat(300));
    let inventory = Inventory {
        vms: vec![
            VmBuilder::new(&long("a"))
                .vcpus(&["0"])
                .gpu_nodes(&[1])
                .build(),
            VmBuilder::new(&long("b"))
                .vcpus(&["0"])
                .gpu_nodes(&[1])
                .build(),
            VmBuilder::new("zzz-last").vcpus(&["0"]).build(),
        ],
        problems: Vec::new(),
    };
    let (topology, totals) = (topo("two-socket-gpu"), BTreeMap::new());
    let text = render(&HostView::build(ViewInputs {
        max_exported_vms: 2,
        ..view_inputs(&topology, &inventory, &totals)
    }));
    let domains: std::collections::BTreeSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("pinsight_domain_info{"))
        .filter_map(|l| l.split("domain=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(domains.len(), 2, "{text}");
    assert!(
        domains.iter().all(|d| d.len() == 256 && d.contains('~')),
        "{domains:?}"
    );
    // Each exported VM's domain is cut where the main families and the thread families label
    // it, and its UUID once: 3 cuts for each of the two.
    assert!(
        text.contains("pinsight_label_values_truncated 6\n"),
        "{text}"
    );
    assert!(text.contains("pinsight_domains_not_exported 1\n"), "{text}");
    assert!(!text.contains("zzz-last"), "{text}");
}

#[test]
fn the_scrape_duration_is_its_own_family() {
    assert_eq!(
        render_scrape_duration(0.25),
        "# HELP pinsight_scrape_duration_seconds Time the previous /metrics render took.\n\
         # TYPE pinsight_scrape_duration_seconds gauge\n\
         pinsight_scrape_duration_seconds 0.25\n"
    );
}
