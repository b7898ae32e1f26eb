//! Userspace cost at scale, without VMs: 100 domains x 8 vCPUs on the 16-CPU two-socket
//! fixture, each vCPU with run time on every CPU and 6 exit reasons. Times one accounting
//! update (what a tick does with the probes' readings) and one /metrics render (what a scrape
//! does), as median and spread over many rounds.
//!
//!     target/release/examples/scrape_scale [--domains 100] [--vcpus 8] [--rounds 200]
//!     (--help lists them)

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use pinsight::accounting::Accounting;
use pinsight::cpuset::CpuSet;
use pinsight::inventory::{
    domain_xml, Gpu, GpuSource, HostThread, Inventory, ThreadRole, VcpuThread, Vm,
};
use pinsight::metrics::render;
use pinsight::probes::{Moves, ThreadCounters};
use pinsight::topology::Topology;
use pinsight::view::{HostView, ViewInputs};

/// Userspace cost of one tick's accounting and one /metrics render at scale, without VMs.
#[derive(clap::Parser)]
struct Args {
    /// Domains on the made-up host.
    #[arg(long, default_value_t = 100)]
    domains: usize,
    /// vCPUs per domain.
    #[arg(long, default_value_t = 8)]
    vcpus: usize,
    /// Rounds to time (median and spread are over these).
    #[arg(long, default_value_t = 200)]
    rounds: usize,
}

fn stats(mut v: Vec<Duration>) -> String {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    format!(
        "median {:.3} ms, p10 {:.3} ms, p90 {:.3} ms, max {:.3} ms",
        ms(v[v.len() / 2]),
        ms(v[v.len() / 10]),
        ms(v[v.len() * 9 / 10]),
        ms(v[v.len() - 1])
    )
}

fn main() {
    let Args {
        domains,
        vcpus,
        rounds,
    } = clap::Parser::parse();
    let root = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sysfs/two-socket-smt"
    );
    let topology = Topology::read(Path::new(root)).expect("fixture topology");
    let ncpu = topology.possible_cpus.len();
    let xml = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/domains/declared-gpu.xml"
    ))
    .unwrap();
    let template = domain_xml::parse_domain_xml(&xml).unwrap();
    let mut tid = 10_000;
    let inventory = Inventory {
        vms: (0..domains)
            .map(|d| {
                let mut spec = template.clone();
                spec.name = format!("vm-{d:03}");
                Vm {
                    name: spec.name.clone(),
                    uuid: format!("00000000-0000-0000-0000-{d:012}"),
                    pid: 1000 + d as u32,
                    vcpus: (0..vcpus as u32)
                        .map(|v| {
                            tid += 1;
                            VcpuThread {
                                vcpu: v,
                                tid,
                                allowed_cpus: "0-15".parse::<CpuSet>().unwrap(),
                                start_time: 1,
                            }
                        })
                        .collect(),
                    // What a libvirt QEMU has besides its vCPUs (see inventory::ThreadRole).
                    threads: [
                        (ThreadRole::Emulator, "qemu-system-x86"),
                        (ThreadRole::Other, "qemu-system-x86"),
                        (ThreadRole::Iothread, "IO mon_iothread"),
                        (ThreadRole::Other, "kvm-nx-lpage-re"),
                    ]
                    .into_iter()
                    .map(|(role, name)| {
                        tid += 1;
                        HostThread {
                            tid,
                            role,
                            name: name.into(),
                            allowed_cpus: "0-15".parse::<CpuSet>().unwrap(),
                            start_time: 1,
                        }
                    })
                    .collect(),
                    gpus: vec![Gpu {
                        address: "0000:3b:00.0".into(),
                        node: Some(1),
                        source: GpuSource::Declared,
                    }],
                    gpu_nodes: vec![1],
                    spec,
                    vmm: pinsight::inventory::Vmm::Libvirt,
                }
            })
            .collect(),
        problems: Vec::new(),
    };
    let vms = &inventory.vms;
    let counters = |scale: u64| -> BTreeMap<u32, ThreadCounters> {
        vms.iter()
            .flat_map(|vm| vm.vcpus.iter())
            .map(|t| {
                let exits = (0..6u32).map(|r| (r * 5, vec![scale * 10; ncpu])).collect();
                (
                    t.tid,
                    ThreadCounters {
                        run_ns_by_cpu: vec![scale * 1_000_000; ncpu],
                        moves: Moves {
                            socket: scale,
                            ..Moves::default()
                        },
                        exits,
                    },
                )
            })
            .chain(vms.iter().flat_map(|vm| vm.threads.iter()).map(|t| {
                let run = ThreadCounters {
                    run_ns_by_cpu: vec![scale * 100_000; ncpu],
                    ..Default::default()
                };
                (t.tid, run)
            }))
            .collect()
    };
    let mut accounting = Accounting::new(Duration::from_secs(60), Some("kvm_exit"));
    let start = Instant::now();
    let mut update_times = Vec::new();
    let mut render_times = Vec::new();
    let mut bytes = 0;
    for round in 1..=rounds as u64 {
        let reading = counters(round);
        let t = Instant::now();
        accounting.update(start + Duration::from_secs(round), vms, &reading, &topology);
        update_times.push(t.elapsed());
        let view = HostView::build(ViewInputs {
            topology: &topology,
            inventory: &inventory,
            totals: accounting.domains(),
            probes: Default::default(),
            libvirt_up: true,
            tick_unix_seconds: 0.0,
            inventory_unix_seconds: None,
            mode: Default::default(),
            per_vcpu_metrics: true,
            penalties: pinsight::view::Penalties::default(),
            calibration: None,
            max_exported_vms: 1000,
            tick: round,
            extra_problems: Vec::new(),
            measuring: true,
            unmeasured_tids: Default::default(),
            interrupts: &Default::default(),
            memory: &Default::default(),
        });
        let t = Instant::now();
        let text = render(&view);
        render_times.push(t.elapsed());
        bytes = text.len();
    }
    println!(
        "{domains} domains x {vcpus} vCPUs, {ncpu} CPUs, 6 exit reasons per vCPU, {rounds} rounds"
    );
    println!("accounting update (per tick): {}", stats(update_times));
    println!(
        "/metrics render (per scrape): {} ({} KiB)",
        stats(render_times),
        bytes / 1024
    );
}
