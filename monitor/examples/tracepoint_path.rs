//! What the kernel's path to a program costs per event, classic tracepoint against raw
//! tracepoint, on a tracepoint a loop can fire at will: `task:task_prctl_unknown`, which
//! `prctl(2)` with an unknown option fires (its record, five integers, is the size of
//! kvm_userspace_exit's). Each configuration (nothing attached; an empty program attached as a
//! classic tracepoint; the same as a raw one) runs the same loop of prctl calls on one CPU,
//! in an order rotated every round; per configuration the time per call, median (min-max)
//! over the rounds, and its difference to "none" in the same round.
//!
//!     cargo build --release --example tracepoint_path
//!     flock -o /work/vmtest.lock target/release/examples/tracepoint_path [--calls 2000000] [--rounds 9]
//!
//! bpf_stats is switched off for the run (and put back): its clock reads would be counted
//! against the two programs alike and blur the difference between the paths.

#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::time::Instant;

use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use clap::Parser;
use pinsight::probes::embedded_object;

/// Classic vs raw tracepoint: cost of the kernel's path per event.
#[derive(Parser)]
struct Args {
    /// prctl calls per configuration per round.
    #[arg(long, default_value_t = 2_000_000)]
    calls: u64,
    /// Rounds.
    #[arg(long, default_value_t = 9)]
    rounds: usize,
    /// The CPU the loop runs on.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
}

/// No prctl option has this number: the kernel fires task_prctl_unknown and returns EINVAL.
const UNKNOWN_OPTION: libc::c_int = 0x7073_0001;

const CONFIGS: [(&str, Option<&str>); 3] = [
    ("none", None),
    ("classic empty", Some("prctl_unknown_classic_empty")),
    ("raw empty", Some("prctl_unknown_raw_empty")),
];

fn attach(name: &str) -> Ebpf {
    let mut ebpf = EbpfLoader::new().load(embedded_object()).unwrap();
    match ebpf.program_mut(name).unwrap() {
        Program::RawTracePoint(prog) => {
            prog.load().unwrap();
            prog.attach("task_prctl_unknown").unwrap();
        }
        Program::TracePoint(prog) => {
            prog.load().unwrap();
            prog.attach("task", "task_prctl_unknown").unwrap();
        }
        other => panic!("{name}: neither a raw nor a classic tracepoint: {other:?}"),
    }
    ebpf
}

/// ns per prctl call over `calls` calls.
fn run(calls: u64) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        // SAFETY: prctl with an unknown option and zero arguments only returns EINVAL.
        let r = unsafe { libc::prctl(UNKNOWN_OPTION, 0, 0, 0, 0) };
        assert_eq!(r, -1);
    }
    start.elapsed().as_nanos() as f64 / calls as f64
}

fn main() {
    let args = Args::parse();
    common::thread::pin_self(args.cpu);
    let _stats = common::BpfStats::set(false);
    println!(
        "## task_prctl_unknown: ns per prctl call, {} calls x {} rounds on CPU {}\n",
        args.calls, args.rounds, args.cpu
    );
    let mut ns: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    println!("| round | {} |", CONFIGS.map(|c| c.0).join(" | "));
    println!("|---|---|---|---|");
    for round in 0..args.rounds {
        let mut cells = vec![String::new(); CONFIGS.len()];
        for i in (0..CONFIGS.len()).map(|i| (i + round) % CONFIGS.len()) {
            let attached = CONFIGS[i].1.map(attach);
            run(args.calls / 10); // warm up
            let per = run(args.calls);
            drop(attached);
            ns[i].push(per);
            cells[i] = format!("{per:.1}");
        }
        println!("| {} | {} |", round + 1, cells.join(" | "));
    }
    println!("\n| configuration | ns per call, median (min-max) | minus none in the same round: median (min-max) |");
    println!("|---|---|---|");
    for (i, (label, _)) in CONFIGS.iter().enumerate() {
        let (m, lo, hi) = common::median_spread(ns[i].clone());
        let diff: Vec<f64> = ns[i].iter().zip(&ns[0]).map(|(x, n)| x - n).collect();
        let (d, dlo, dhi) = common::median_spread(diff);
        println!("| {label} | {m:.1} ({lo:.1}-{hi:.1}) | {d:+.1} ({dlo:+.1} to {dhi:+.1}) |");
    }
}
