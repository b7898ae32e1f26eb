//! What the sched_migrate_task probe costs per run, against an empty tp_btf program on the
//! same tracepoint and older builds' probes (e.g. the classic tracepoint of main before
//! 2026-12-07), all attached at once so every program runs on exactly the same moves.
//!
//!     cargo build --release --example migrate_cost
//!     flock -o /work/vmtest.lock target/release/examples/migrate_cost \
//!         --compare main=OLD.o [--moves 200000] [--rounds 7]
//!
//! The load is one thread that pins itself to CPU 0 and CPU 1 in turn: every pin is one move
//! (one sched_migrate_task event). Two scenarios per round: "untracked" (the moving thread is
//! nobody's: what every task's move on a host costs) and "tracked" (each probe tracks it).
//! Per program: ns per run from bpf_stats, its ratio to the empty program in the same
//! interval, median (min-max) over the rounds. bpf_stats times only the program: the
//! kernel's path to it (a classic tracepoint builds a record first) is
//! `examples/tracepoint_path.rs`'s measure.

#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use aya::maps::Array;
use aya::programs::{BtfTracePoint, Program};
use aya::{Btf, EbpfLoader};
use clap::Parser;
use monitor_common::programs::{SCHED_MIGRATE_TASK, SCHED_MIGRATE_TASK_EMPTY};
use monitor_common::tracked::slot_words;
use pinsight::probes::{embedded_object, ProbeOptions, Probes};

/// Cost of the sched_migrate_task probe against an empty program and older builds.
#[derive(Parser)]
struct Args {
    /// Other builds' eBPF objects to compare with, as LABEL=PATH (repeatable).
    #[arg(long = "compare", value_name = "LABEL=PATH")]
    compare: Vec<String>,
    /// Moves per scenario per round.
    #[arg(long, default_value_t = 200_000)]
    moves: u64,
    /// Rounds (each: untracked, then tracked).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
}

/// Loads an older object as its daemon would and attaches only its sched_migrate_task, as
/// the object builds it (classic tracepoint, or tp_btf).
fn attach_other(label: &str, object: &[u8], btf: &Btf) -> common::Other {
    let mut ebpf = EbpfLoader::new()
        .btf(Some(btf))
        .set_max_entries("TRACKED_TIDS", slot_words(pinsight::probes::pid_max()))
        .set_max_entries("RUN_NS", 1025)
        .set_max_entries("THREAD_RUN", 1025)
        .set_max_entries("KVM_EXITS", 1025)
        .set_max_entries("CPU_TOPO", 64)
        .load(object)
        .unwrap();
    match ebpf.program_mut(SCHED_MIGRATE_TASK).unwrap() {
        Program::TracePoint(prog) => {
            prog.load().unwrap();
            prog.attach("sched", "sched_migrate_task").unwrap();
        }
        Program::BtfTracePoint(_) => {
            panic!("{label}: a tp_btf sched_migrate_task needs this build's offsets: compare classic objects only")
        }
        other => panic!("{label}: sched_migrate_task is {other:?}"),
    }
    let tids = Array::try_from(ebpf.take_map("TRACKED_TIDS").unwrap()).unwrap();
    (label.to_string(), ebpf, tids)
}

fn main() {
    let args = Args::parse();
    let _stats = common::BpfStats::set(true);
    let btf = Btf::from_sys_fs().unwrap();
    let me = common::thread::gettid();

    let mut empty = EbpfLoader::new().load(embedded_object()).unwrap();
    let prog: &mut BtfTracePoint = empty
        .program_mut(SCHED_MIGRATE_TASK_EMPTY)
        .unwrap()
        .try_into()
        .unwrap();
    prog.load("sched_migrate_task", &btf).unwrap();
    prog.attach().unwrap();
    let mut others: Vec<common::Other> = common::compared_objects(&args.compare)
        .iter()
        .map(|(label, object)| attach_other(label, object, &btf))
        .collect();
    let mut probes = Probes::load(ProbeOptions {
        max_threads: 1024,
        max_other_threads: 64,
        kvm_exit_source: Default::default(),
        cpu_topo: Default::default(),
    })
    .unwrap();

    let mut who: Vec<String> = vec!["empty".into()];
    who.extend(others.iter().map(|(label, _, _)| label.clone()));
    who.push("this build".into());
    println!(
        "## sched_migrate_task: ns per run (bpf_stats), all {} programs attached at once, {} rounds x {} moves per scenario\n",
        who.len(),
        args.rounds,
        args.moves
    );
    let head: Vec<String> = who.iter().map(|w| format!("{w} ns/run")).collect();
    println!("| round | scenario | runs | {} |", head.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(who.len()));
    let mut ns: Vec<(&str, usize, f64)> = Vec::new();
    for round in 1..=args.rounds {
        for (scenario, track) in [("untracked", false), ("tracked", true)] {
            let mut point = common::OnePoint {
                empty: (&empty, SCHED_MIGRATE_TASK_EMPTY),
                others: &mut others,
                probes: &mut probes,
                program: SCHED_MIGRATE_TASK,
            };
            let per = point.scenario(round, scenario, me, track, || {
                for i in 0..args.moves {
                    common::thread::pin_self((i % 2) as usize);
                }
            });
            ns.extend(per.iter().enumerate().map(|(i, x)| (scenario, i, *x)));
        }
    }
    common::print_summary(&["untracked", "tracked"], &who, &ns);
}
