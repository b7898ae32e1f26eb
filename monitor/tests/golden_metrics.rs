//! Golden test of /metrics: names, types, HELP texts and label sets are an interface that
//! dashboards and alert rules depend on. The accounting runs on the two-socket fixture with
//! made-up probe counters; the rendered text must equal tests/golden/metrics.prom.
//! After an intended change: `PINSIGHT_UPDATE_GOLDEN=1 cargo test --release --test golden_metrics`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pinsight::accounting::Accounting;
use pinsight::calibration::{Calibration, PairFigures};
use pinsight::config::Mode;
use pinsight::cpuset::CpuSet;
use pinsight::inventory::{
    domain_xml, Gpu, GpuSource, HostThread, Inventory, ThreadRole, VcpuThread, Vm,
};
use pinsight::memory::{MemorySource, Resident};
use pinsight::metrics::{render, render_scrape_duration};
use pinsight::probes::{Moves, ThreadCounters};
use pinsight::topology::Topology;
use pinsight::view::{
    DepthFilterView, HostView, MapView, ProbeView, ProbesView, ProgramView, ViewInputs,
};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

fn vm(xml_fixture: &str, tid: u32, gpu: Option<(&str, u32)>) -> Vm {
    let xml = std::fs::read_to_string(format!("{MANIFEST}/tests/fixtures/domains/{xml_fixture}"))
        .expect("domain XML fixture");
    let spec = domain_xml::parse_domain_xml(&xml).expect("the fixture parses");
    Vm {
        name: spec.name.clone(),
        uuid: spec.uuid.clone(),
        pid: 1000,
        vcpus: vec![VcpuThread {
            vcpu: 0,
            tid,
            allowed_cpus: "0-1".parse::<CpuSet>().expect("a CPU list"),
            start_time: 1,
        }],
        // The main thread, as tid + 1000.
        threads: vec![HostThread {
            tid: tid + 1000,
            role: ThreadRole::Emulator,
            name: "qemu-system-x86".into(),
            allowed_cpus: CpuSet::default(),
            start_time: 1,
        }],
        gpus: gpu
            .map(|(address, node)| {
                vec![Gpu {
                    address: address.into(),
                    node: Some(node),
                    source: GpuSource::Declared,
                }]
            })
            .unwrap_or_default(),
        gpu_nodes: gpu.map(|(_, node)| vec![node]).unwrap_or_default(),
        spec,
        vmm: pinsight::inventory::Vmm::Libvirt,
    }
}

#[test]
fn metrics_exposition_matches_the_golden_file() {
    let topology = Topology::read(Path::new(&format!(
        "{MANIFEST}/tests/fixtures/sysfs/two-socket-gpu"
    )))
    .unwrap();
    let vms = vec![
        vm("declared-gpu.xml", 101, Some(("0000:3b:00.0", 1))),
        vm("no-gpu.xml", 202, None),
    ];
    let mut accounting = Accounting::new(Duration::from_secs(60), Some("kvm_userspace_exit"));
    let start = Instant::now();
    let zero = |tid| {
        (
            tid,
            ThreadCounters {
                run_ns_by_cpu: vec![0, 0],
                ..Default::default()
            },
        )
    };
    accounting.update(
        start,
        &vms,
        &BTreeMap::from([zero(101), zero(202), zero(1101), zero(1202)]),
        &topology,
    );
    // GPU VM: 3 s on CPU 0 (socket 0: remote), 1 s on CPU 1 (the GPU's node: local), six
    // moves (3 to an SMT sibling, 1 to another core, 2 to another socket), 40 IO exits on CPU 0
    // and 2 MMIO exits on CPU 1; its main thread 0.25 s on CPU 0 and 0.75 s on CPU 1. The
    // GPU-less VM: 0.5 s on CPU 0, its main thread nothing.
    let later = BTreeMap::from([
        (
            101,
            ThreadCounters {
                run_ns_by_cpu: vec![3_000_000_000, 1_000_000_000],
                moves: Moves {
                    smt: 3,
                    core: 1,
                    socket: 2,
                    ..Moves::default()
                },
                exits: BTreeMap::from([(2, vec![40, 0]), (6, vec![0, 2])]),
            },
        ),
        (
            202,
            ThreadCounters {
                run_ns_by_cpu: vec![500_000_000, 0],
                ..Default::default()
            },
        ),
        (
            1101,
            ThreadCounters {
                run_ns_by_cpu: vec![250_000_000, 750_000_000],
                ..Default::default()
            },
        ),
        zero(1202),
    ]);
    accounting.update(start + Duration::from_secs(4), &vms, &later, &topology);

    let probe = |attached| ProbeView {
        attached,
        detail: String::new(),
    };
    let map = |map: &str, entries, capacity| MapView {
        map: map.into(),
        entries,
        capacity,
    };
    let inventory = Inventory {
        vms,
        problems: Vec::new(),
    };
    let interrupts = pinsight::interrupts::read(Path::new(&format!(
        "{MANIFEST}/tests/fixtures/proc/two-socket-gpu"
    )))
    .expect("the /proc fixture");
    // 3 GiB on node 0 (the far socket for gpu-vm-declared), 1 GiB on its GPU's node, of
    // which 512 MiB hugetlb pages; the GPU-less VM's 1 MiB read from numa_maps.
    let memory = BTreeMap::from([
        (
            "gpu-vm-declared".to_string(),
            Resident {
                by_node: BTreeMap::from([(0, 3 << 30), (1, 1 << 30)]),
                hugetlb_by_node: BTreeMap::from([(1, 512 << 20)]),
                hugetlb_node_unknown: 0,
                source: MemorySource::Cgroup,
            },
        ),
        (
            "plain-vm".to_string(),
            Resident {
                by_node: BTreeMap::from([(0, 1 << 20)]),
                hugetlb_by_node: BTreeMap::new(),
                hugetlb_node_unknown: 0,
                source: MemorySource::NumaMaps,
            },
        ),
    ]);
    // As `pinsight calibrate` would write it on a two-node host.
    let figures = |from, to, latency_ns, bandwidth_bytes_per_second| PairFigures {
        from,
        to,
        latency_ns,
        bandwidth_bytes_per_second,
    };
    let calibration = Calibration {
        version: pinsight::calibration::VERSION,
        measured_unix_seconds: 1_700_000_000.0,
        buffer_bytes: 256 << 20,
        pairs: vec![
            figures(0, 0, 100.0, 20e9),
            figures(0, 1, 160.0, 12e9),
            figures(1, 1, 100.0, 20e9),
            figures(1, 0, 150.0, 10e9),
        ],
    };
    let mut view = HostView::build(ViewInputs {
        topology: &topology,
        inventory: &inventory,
        totals: accounting.domains(),
        probes: ProbesView {
            probes: BTreeMap::from([
                ("kvm_exit".to_string(), probe(false)),
                ("kvm_userspace_exit".to_string(), probe(true)),
                ("sched_switch".to_string(), probe(true)),
            ]),
            program_stats: Some(vec![ProgramView {
                program: "sched_switch".into(),
                run_time_ns: 1_500_000,
                run_count: 30_000,
            }]),
            maps: vec![map("RUN_NS", 2, 1024), map("KVM_EXITS", 2, 16384)],
            map_errors: 0,
            unseen_switches: 3,
            depth_filter: DepthFilterView {
                open: false,
                depths: vec![3],
                can_close: true,
                threads_ran_unseen: 1,
            },
        },
        libvirt_up: true,
        tick_unix_seconds: 1_800_000_000.5,
        inventory_unix_seconds: Some(1_799_999_999.0),
        mode: Mode::Recommend,
        per_vcpu_metrics: true,
        penalties: pinsight::view::Penalties::default(),
        calibration: Some(&calibration),
        max_exported_vms: 1000,
        tick: 2,
        extra_problems: Vec::new(),
        measuring: true,
        // The GPU-less VM's thread could not be tracked (maps full).
        unmeasured_tids: [202].into(),
        interrupts: &interrupts,
        memory: &memory,
    });
    // The policy's part of the view: vCPU 0 of the GPU VM would be moved, and one opt-out was
    // counted.
    view.vms[0].vcpus[0].repin_recommended = Some(true);
    view.vms[0].repins.insert("skipped_optout".to_string(), 1);
    view.fixes = Some(fixes_view(&view.vms[0].domain));
    let rendered = (render(&view) + &render_scrape_duration(0.001))
        .replace(env!("CARGO_PKG_VERSION"), "VERSION")
        .replace(pinsight::metrics::exporter::COMMIT, "COMMIT")
        .replace(pinsight::metrics::exporter::RUSTC_VERSION, "RUSTC");
    let golden_path = format!("{MANIFEST}/tests/golden/metrics.prom");
    if std::env::var_os("PINSIGHT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden_path, &rendered).unwrap();
    }
    let golden = std::fs::read_to_string(&golden_path)
        .expect("golden file (PINSIGHT_UPDATE_GOLDEN=1 writes it)");
    if rendered != golden {
        panic!(
            "/metrics differs from {golden_path} (PINSIGHT_UPDATE_GOLDEN=1 rewrites it):\n{}",
            golden_diff(&golden, &rendered)
        );
    }
    // Independent of the golden file: the figures the accounting must produce.
    assert!(rendered.contains(
        "pinsight_domain_run_seconds_total{domain=\"gpu-vm-declared\",locality=\"remote\"} 3\n"
    ));
    assert!(rendered.contains("pinsight_domain_remote_ratio{domain=\"gpu-vm-declared\"} 0.75\n"));
    assert!(rendered.contains(
        "pinsight_domain_run_seconds_total{domain=\"plain-vm\",locality=\"none\"} 0.5\n"
    ));
    assert!(rendered.contains("reason=\"io\"} 40\n"));
}

/// A unified diff (golden -> rendered) with 3 lines of context: its hunk headers give the line
/// numbers on both sides, also after an inserted or removed line.
fn golden_diff(golden: &str, rendered: &str) -> String {
    similar::TextDiff::from_lines(golden, rendered)
        .unified_diff()
        .context_radius(3)
        .header("golden", "rendered")
        .to_string()
}

#[test]
fn golden_diff_names_the_line_of_an_insertion() {
    let golden = "a 1\nb 2\nc 3\nd 4\n";
    let rendered = "a 1\nb 2\nnew 9\nc 3\nd 4\n";
    let diff = golden_diff(golden, rendered);
    // One hunk: from golden line 1 (4 lines) to rendered line 1 (5 lines), "new 9" added as
    // line 3, every other line context, not a cascade of changed lines.
    assert!(diff.contains("@@ -1,4 +1,5 @@"), "{diff}");
    assert!(diff.contains("\n+new 9\n"), "{diff}");
    assert_eq!(diff.matches("\n-").count(), 0, "{diff}");
    assert!(diff.contains("\n c 3\n"), "{diff}");
}

/// The memory and interrupt fixes of a VM whose memory and one GPU line are misplaced.
fn fixes_view(domain: &str) -> pinsight::policy::fixes::FixesView {
    use pinsight::policy::fixes::{FixPlan, FixVerdict, FixesView, IrqFix, IrqMove, MemoryFix};
    let cpus = |s: &str| s.parse::<CpuSet>().expect("a CPU list");
    FixesView {
        plan: FixPlan {
            memory: vec![MemoryFix {
                domain: domain.into(),
                uuid: "u".into(),
                pid: 1000,
                bytes: 3 << 30,
                off_ratio: 0.75,
                from: cpus("0"),
                to: cpus("1"),
                method: pinsight::policy::fixes::MemoryMethod::MigratePages,
                verdict: FixVerdict::Recommend,
                reason: String::new(),
            }],
            irq: vec![IrqFix {
                domain: domain.into(),
                uuid: "u".into(),
                gpu: "0000:3b:00.0".into(),
                lines: vec![IrqMove {
                    irq: 156,
                    before: cpus("0"),
                    after: cpus("1"),
                }],
                verdict: FixVerdict::Apply,
                reason: String::new(),
            }],
            irqbalance: None,
        },
        memory_moves: vec![(domain.into(), "recommended".into(), 1)],
        irq_moves: vec![(domain.into(), "0000:3b:00.0".into(), "applied".into(), 1)],
        irqbalance_running: Some(false),
    }
}
