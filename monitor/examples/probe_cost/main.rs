//! Measures what the sched_switch probe costs, against the floor any program on the same
//! attach point pays (an empty program loaded the same way), and against older builds' probes
//! (`--compare LABEL=OBJ`), in one run on this machine.
//!
//!     target/release/examples/probe_cost [--seconds 5] [--rounds 7] [--compare main=OLD.o]
//!         [--sleepers 64]                                        (--help lists them)
//!
//! Part 1 (bpf_stats): the empty program, each older object's sched_switch and this build's
//! probes are attached at the same time (attach order rotated each round), so all run on
//! exactly the same switches; the ratio of each mean run time to the empty program's in the
//! same interval is what that build adds. Five scenarios per round:
//! - busy untracked: a two-thread pipe ping-pong nobody tracks (the common case on a host);
//! - busy tracked: the same ping-pong with both threads tracked (worst case: every switch has
//!   a tracked thread on both sides when the two share a CPU);
//! - busy one tracked: the same with only one of the two tracked, as a vCPU thread that
//!   switches with host threads or the idle task (one tracked side per switch);
//! - quiet untracked: no load of our own: the host's own switches, and those of `--sleepers`
//!   threads that wake a few times a second each at thread ids spread over all of pid_max
//!   (placed through ns_last_pid), as a long-running host's daemons are: the case where the
//!   tables' lines are cold at every switch;
//! - quiet tracked: the same, with one tracked thread waking every 2 ms.
//!
//! Part 2 (`perf bench sched pipe`, both ends pinned to CPU 0): none / empty / each older
//! object / this build alternating, nothing tracked, several rounds; median and spread of
//! usecs/op.
//!
//! The empty program and older objects are loaded here: they are benchmark-only, so the
//! library has no API for them.

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

#[path = "../common/mod.rs"]
mod common;
mod programs;
mod workload;

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::thread::CpuCgroups;
use pinsight::probes::Probes;
use programs::{load_empty_sched_switch, options, Attached, Other};
use workload::{ping_pong, resident, sleepers, ticker, VmCgroup};

/// Cost of pinsight's sched_switch probe against an empty program on the same attach point.
#[derive(Parser)]
struct Args {
    /// Seconds each bpf_stats scenario runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of the bpf_stats scenarios, and of `perf bench sched pipe` per configuration.
    #[arg(long, default_value_t = 7)]
    rounds: u64,
    /// Other builds' eBPF objects to compare with, as LABEL=PATH (repeatable): their
    /// sched_switch, and a TRACKED_TIDS slot table (and TRACKED_BITS, if they have one) of
    /// this build's layout; a depth filter word, if they have one, is kept at this build's.
    #[arg(long = "compare", value_name = "LABEL=PATH")]
    compare: Vec<String>,
    /// Threads that each wake every 50-150 ms for the whole run, at thread ids spread evenly
    /// over pid_max: the quiet scenarios' background switches.
    #[arg(long, default_value_t = 0)]
    sleepers: u32,
    /// Skip part 2 (perf bench).
    #[arg(long)]
    no_perf: bool,
    /// CPU cgroup depth of the tracked threads, as a VM's (libvirt on cgroup v1 puts vCPU
    /// threads at 3: machine/qemu-N-NAME.libvirt-qemu/vcpuN); a sleeping tracked thread stays
    /// there all along, as a host's idle VMs do, while the untracked threads stay in the root.
    /// 0 puts everything in the root, where the depth filter lets every switch through.
    #[arg(long, default_value_t = 3)]
    vm_depth: usize,
}

fn perf_pipe(loops: u64) -> f64 {
    // Both ends on CPU 0: on this 2-CPU VM, unpinned runs flip between "same CPU" (~2 us/op)
    // and "two CPUs" (~30 us/op, cross-CPU wake-ups under nested virtualisation), which
    // drowns any probe cost in noise.
    let out = Command::new("taskset")
        .args([
            "-c",
            "0",
            "perf",
            "bench",
            "sched",
            "pipe",
            "-l",
            &loops.to_string(),
        ])
        .output()
        .expect("perf (linux-perf) installed by scripts/setup.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_suffix("usecs/op"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected perf output: {text}"))
}

/// One scenario over `seconds`: ns per run of each program, switches seen, and this build's
/// depth filter word during it. A tracked scenario's threads go to `vm`'s depth first.
fn scenario(
    attached: &mut Attached,
    name: &str,
    seconds: u64,
    vm: VmCgroup,
) -> (Vec<f64>, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tids, handles) = match name {
        "busy untracked" | "busy tracked" | "busy one tracked" => ping_pong(stop.clone()),
        _ => (vec![ticker(stop.clone())], Vec::new()),
    };
    let tracked = match name {
        "busy one tracked" => &tids[..1],
        _ if name.ends_with(" tracked") => &tids[..],
        _ => &[],
    };
    let track = !tracked.is_empty();
    if track {
        if let Some((cgroups, depth)) = vm {
            tracked
                .iter()
                .for_each(|&tid| cgroups.move_thread(tid, depth));
        }
        attached.track(tracked, true);
    }
    let word = attached.filter_word();
    let start = attached.sample();
    std::thread::sleep(Duration::from_secs(seconds));
    let end = attached.sample();
    stop.store(true, Ordering::Relaxed);
    if track {
        attached.track(tracked, false);
    }
    for h in handles {
        h.join().unwrap();
    }
    let per = common::ns_per_run(&start, &end);
    (per, end[0].1 - start[0].1, word)
}

const SCENARIOS: [&str; 5] = [
    "busy untracked",
    "busy tracked",
    "busy one tracked",
    "quiet untracked",
    "quiet tracked",
];

fn main() {
    let args = Args::parse();
    let _stats = common::BpfStats::set(true);
    let pid_max = pinsight::probes::pid_max();
    let objects = common::compared_objects(&args.compare);
    let stop_sleepers = Arc::new(AtomicBool::new(false));
    let sleeper_tids = sleepers(args.sleepers, pid_max, stop_sleepers.clone());
    let cgroups = (args.vm_depth > 0).then(|| CpuCgroups::make(args.vm_depth));
    let vm = cgroups.as_ref().map(|c| (c, args.vm_depth));
    let resident_tid = resident(stop_sleepers.clone(), vm);
    let mut who: Vec<String> = vec!["empty".into()];
    who.extend(objects.iter().map(|(label, _)| label.clone()));
    who.push("this build".into());

    println!(
        "## sched_switch: ns per run (bpf_stats), all {} programs attached at once (attach order rotated each round), {} rounds x {} s per scenario\n",
        who.len(),
        args.rounds,
        args.seconds
    );
    println!(
        "pid_max {pid_max}; {} sleeper threads, tids {:?}; tracked threads at CPU cgroup depth {} (a sleeping one all along), untracked ones at 0\n",
        sleeper_tids.len(),
        sleeper_tids,
        args.vm_depth
    );
    let head: Vec<String> = who.iter().map(|w| format!("{w} ns/run")).collect();
    println!(
        "| round | scenario | switches | depth filter | {} |",
        head.join(" | ")
    );
    println!("|---|---|---|---|{}", "---|".repeat(who.len()));
    // (scenario, program index, ns per run)
    let mut ns: Vec<(&str, usize, f64)> = Vec::new();
    for round in 1..=args.rounds as usize {
        let mut attached = Attached::all(round, &objects, pid_max, &[resident_tid]);
        for name in SCENARIOS {
            let (per, runs, word) = scenario(&mut attached, name, args.seconds, vm);
            let cells: Vec<String> = per.iter().map(|x| format!("{x:.1}")).collect();
            println!(
                "| {round} | {name} | {runs} | {word:#x} | {} |",
                cells.join(" | ")
            );
            ns.extend(per.iter().enumerate().map(|(i, x)| (name, i, *x)));
        }
    }
    common::print_summary(&SCENARIOS, &who, &ns);

    if !args.no_perf {
        println!(
            "\n## perf bench sched pipe (usecs/op; {} rounds, configurations alternating, nothing tracked)\n",
            args.rounds
        );
        let loops = 200_000;
        let mut results: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for _ in 0..args.rounds {
            results
                .entry("1 none".into())
                .or_default()
                .push(perf_pipe(loops));
            let empty = load_empty_sched_switch().expect("load empty");
            results
                .entry("2 empty program".into())
                .or_default()
                .push(perf_pipe(loops));
            drop(empty);
            for (n, (label, object)) in objects.iter().enumerate() {
                let other = Other::load(object, pid_max);
                results
                    .entry(format!("{} {label}", n + 3))
                    .or_default()
                    .push(perf_pipe(loops));
                drop(other);
            }
            let probes = Probes::load(options()).expect("load probes");
            results
                .entry(format!("{} this build", objects.len() + 3))
                .or_default()
                .push(perf_pipe(loops));
            drop(probes);
        }
        let (base, _, _) = common::median_spread(results["1 none"].clone());
        println!("| configuration | median | min | max | slowdown vs none (median) |");
        println!("|---|---|---|---|---|");
        for (name, v) in &results {
            let (m, lo, hi) = common::median_spread(v.clone());
            println!(
                "| {} | {m:.3} | {lo:.3} | {hi:.3} | {:+.1}% |",
                name.split_once(' ').unwrap().1,
                (m / base - 1.0) * 100.0
            );
        }
    }
    stop_sleepers.store(true, Ordering::Relaxed);
    drop(cgroups);
}
