//! Measures what the sched_switch probe costs, against the floor any program on the same
//! attach point pays (an empty program loaded the same way), in one run on this machine.
//!
//!     target/release/examples/probe_cost [--seconds 5] [--rounds 7]   (--help lists them)
//!
//! Part 1 (bpf_stats): the empty program and pinsight's are attached at the same time, so both
//! run on exactly the same switches; the ratio of their mean run times is what pinsight adds.
//! Scenario "untracked": a two-thread pipe ping-pong nobody tracks (the common case on a host).
//! Scenario "tracked": the same ping-pong with both threads tracked (worst case: every switch
//! has a tracked thread on one side).
//! Part 2 (`perf bench sched pipe`, both ends pinned to CPU 0): none / empty / pinsight
//! alternating, several rounds; median and spread of usecs/op.
//!
//! The empty program is loaded here, from the daemon's embedded object: it is benchmark-only,
//! so the library has no API for it.

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use clap::Parser;
use monitor_common::programs::{SCHED_SWITCH, SCHED_SWITCH_EMPTY};
use monitor_common::sched_migrate_task::CpuTopo;
use pinsight::probes::{embedded_object, KvmExitSource, ProbeOptions, Probes};

/// Cost of pinsight's sched_switch probe against an empty program on the same attach point.
#[derive(Parser)]
struct Args {
    /// Seconds each bpf_stats scenario runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of `perf bench sched pipe` per configuration.
    #[arg(long, default_value_t = 7)]
    rounds: u64,
}

/// Loads the daemon's object and attaches only `sched_switch_empty`; detached when dropped.
fn load_empty_sched_switch() -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new().load(embedded_object())?;
    let btf = Btf::from_sys_fs()?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(SCHED_SWITCH_EMPTY)
        .ok_or_else(|| anyhow::anyhow!("the object has no {SCHED_SWITCH_EMPTY}"))?
        .try_into()?;
    prog.load("sched_switch", &btf)?;
    prog.attach()?;
    Ok(ebpf)
}

/// (run time ns, run count) of the empty program, from bpf_stats.
fn empty_run_stats(ebpf: &Ebpf) -> (u64, u64) {
    let info = ebpf
        .program(SCHED_SWITCH_EMPTY)
        .and_then(|p| p.info().ok())
        .expect("the empty program is loaded");
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// (run time ns, run count) of pinsight's sched_switch, from bpf_stats.
fn sched_switch_run_stats(probes: &Probes) -> (u64, u64) {
    let stats = probes.program_stats().expect("bpf_stats enabled");
    let s = stats
        .iter()
        .find(|s| s.program == SCHED_SWITCH)
        .expect("sched_switch attached");
    (s.run_time_ns, s.run_count)
}

fn gettid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Two threads bouncing a byte over a socket pair until `stop`; returns their tids.
fn ping_pong(stop: Arc<AtomicBool>) -> (Vec<u32>, Vec<std::thread::JoinHandle<u64>>) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let stop2 = stop.clone();
    let ping = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let mut n = 0;
        let mut buf = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if a.write_all(&[1]).is_err() || a.read_exact(&mut buf).is_err() {
                break;
            }
            n += 1;
        }
        drop(a);
        n
    });
    let pong = std::thread::spawn(move || {
        tx2.send(gettid()).unwrap();
        let mut buf = [0u8; 1];
        let mut n = 0;
        while b.read_exact(&mut buf).is_ok() && b.write_all(&buf).is_ok() {
            n += 1;
            if stop2.load(Ordering::Relaxed) {
                break;
            }
        }
        n
    });
    (
        vec![rx.recv().unwrap(), rx.recv().unwrap()],
        vec![ping, pong],
    )
}

fn options() -> ProbeOptions {
    ProbeOptions {
        max_threads: 1024,
        max_other_threads: 64,
        kvm_exit_source: KvmExitSource::Off,
        // 64 one-CPU cores, alternating between two socket-nodes.
        cpu_topo: (0..64)
            .map(|c| {
                let socket = c % 2;
                (
                    c,
                    CpuTopo {
                        core: c,
                        node: socket,
                        socket,
                    },
                )
            })
            .collect(),
    }
}

fn stats_scenario(track: bool, seconds: u64) -> (f64, f64, u64) {
    let empty = load_empty_sched_switch().expect("load empty program");
    let mut probes = Probes::load(options()).expect("load pinsight probes");
    let stop = Arc::new(AtomicBool::new(false));
    let (tids, handles) = ping_pong(stop.clone());
    if track {
        for tid in &tids {
            probes.track(*tid).expect("track");
        }
    }
    let e0 = empty_run_stats(&empty);
    let p0 = sched_switch_run_stats(&probes);
    std::thread::sleep(Duration::from_secs(seconds));
    let e1 = empty_run_stats(&empty);
    let p1 = sched_switch_run_stats(&probes);
    stop.store(true, Ordering::Relaxed);
    let round_trips: u64 = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .max()
        .unwrap_or(0);
    let per = |a: (u64, u64), b: (u64, u64)| (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64;
    (per(e0, e1), per(p0, p1), round_trips)
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

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let Args { seconds, rounds } = Args::parse();
    let stats_were_on = pinsight::probes::bpf_stats_enabled();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("root needed for bpf_stats");

    println!("## sched_switch probe cost (bpf_stats, both programs attached, same switches, {seconds} s each)\n");
    println!(
        "| scenario | empty program ns/run | pinsight ns/run | ratio | ping-pong round trips |"
    );
    println!("|---|---|---|---|---|");
    for (name, track) in [
        ("no tracked thread", false),
        ("both ping-pong threads tracked", true),
    ] {
        let (empty, ours, trips) = stats_scenario(track, seconds);
        println!(
            "| {name} | {empty:.1} | {ours:.1} | {:.2}x | {trips} |",
            ours / empty
        );
    }

    println!(
        "\n## perf bench sched pipe (usecs/op; {rounds} rounds, configurations alternating)\n"
    );
    let loops = 200_000;
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for _ in 0..rounds {
        results.entry("1 none").or_default().push(perf_pipe(loops));
        let empty = load_empty_sched_switch().expect("load empty");
        results
            .entry("2 empty program")
            .or_default()
            .push(perf_pipe(loops));
        drop(empty);
        let probes = Probes::load(options()).expect("load probes");
        results
            .entry("3 pinsight (nothing tracked)")
            .or_default()
            .push(perf_pipe(loops));
        drop(probes);
    }
    let (base, _, _) = median_spread(results["1 none"].clone());
    println!("| configuration | median | min | max | slowdown vs none (median) |");
    println!("|---|---|---|---|---|");
    for (name, v) in &results {
        let (m, lo, hi) = median_spread(v.clone());
        println!(
            "| {} | {m:.3} | {lo:.3} | {hi:.3} | {:+.1}% |",
            &name[2..],
            (m / base - 1.0) * 100.0
        );
    }
    if !stats_were_on {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    }
}
