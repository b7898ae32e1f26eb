//! What one reading of a VM's memory by node costs: its cgroup counters (what the daemon
//! reads every tick) against a walk of /proc/PID/numa_maps (the opt-in fallback), interleaved
//! in one run on the same process, so the ratio holds on a noisy machine.
//!
//!     target/release/examples/memory_read_cost --pid PID [--rounds 50]   (--help lists them)
//!
//! scripts/bench-memory-read.sh starts real VMs of a few sizes and runs this on each.

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use pinsight::memory;

/// Cost of reading a process's memory by node: cgroup counters vs numa_maps.
#[derive(Parser)]
struct Args {
    /// The QEMU process.
    #[arg(long)]
    pid: u32,
    /// Readings of each kind, interleaved.
    #[arg(long, default_value_t = 50)]
    rounds: usize,
    /// Root of the cgroup file systems.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    cgroup_root: String,
}

fn stats(mut d: Vec<Duration>) -> (f64, f64, f64) {
    d.sort();
    let us = |x: Duration| x.as_secs_f64() * 1e6;
    let at = |q: f64| us(d[((d.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.1), at(0.9))
}

fn main() {
    let args = Args::parse();
    let (proc_root, cgroup_root) = (Path::new("/proc"), Path::new(&args.cgroup_root));
    let (mut cgroup, mut walk) = (Vec::new(), Vec::new());
    let (mut cgroup_bytes, mut walk_bytes) = (0, 0);
    for _ in 0..args.rounds {
        let t = Instant::now();
        let r = memory::read(proc_root, cgroup_root, args.pid).unwrap();
        cgroup.push(t.elapsed());
        cgroup_bytes = r.by_node.values().sum::<u64>();
        let t = Instant::now();
        let w = memory::numa_maps::read(proc_root, args.pid, false).unwrap();
        walk.push(t.elapsed());
        walk_bytes = w.values().sum::<u64>();
    }
    let (c50, c10, c90) = stats(cgroup);
    let (w50, w10, w90) = stats(walk);
    println!(
        "pid {}: cgroup counters {} MiB, numa_maps {} MiB",
        args.pid,
        cgroup_bytes >> 20,
        walk_bytes >> 20
    );
    println!("cgroup counters: median {c50:.1} us (p10 {c10:.1}, p90 {c90:.1})");
    println!("numa_maps walk:  median {w50:.1} us (p10 {w10:.1}, p90 {w90:.1})");
    println!("ratio of medians: {:.1}x", w50 / c50);
}
