//! `pinsight calibrate`: measures this host's node-to-node memory latency and bandwidth (a
//! thread on each node's CPUs reading memory bound to each node) and writes the calibration
//! file the daemon exports (`pinsight_node_memory_latency_ratio{from,to}` and the bandwidth
//! ratio). Reads the real /sys: binding memory to a node only means something on this host's
//! own nodes, so there is no fixture root here.

use std::path::{Path, PathBuf};

use clap::Args;

use super::CliError;
use crate::calibration::measure::{self, Plan};
use crate::calibration::{Calibration, VERSION};
use crate::topology::Topology;

/// Arguments of `pinsight calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// Where to write the calibration file (the daemon's `calibration_file`).
    #[arg(long, default_value = "/var/lib/pinsight/calibration.json")]
    pub output: PathBuf,
    /// Buffer per pair, MiB: far larger than the last-level cache (default 256).
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..=65536))]
    pub buffer_mib: u64,
    /// Dependent loads timed per pair for the latency.
    #[arg(long, default_value_t = 2_000_000, value_parser = clap::value_parser!(u64).range(10_000..=1_000_000_000))]
    pub chase_steps: u64,
    /// Sequential passes over the buffer timed per pair for the bandwidth.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=100))]
    pub passes: u64,
}

/// Measures every (CPU node, memory node) pair, prints the matrix and writes the file.
pub fn execute(args: CalibrateArgs) -> Result<(), CliError> {
    let sysfs = Path::new("/sys");
    let topology = Topology::read(sysfs).map_err(|source| CliError::Topology {
        sysfs_root: sysfs.to_path_buf(),
        source,
    })?;
    let plan = Plan {
        buffer_bytes: (args.buffer_mib << 20) as usize,
        chase_steps: args.chase_steps as usize,
        passes: args.passes as usize,
    };
    let cpu_nodes: Vec<_> = topology
        .nodes
        .values()
        .filter(|n| !n.cpus.is_empty())
        .collect();
    if topology.nodes.len() == 1 {
        println!(
            "This host has one NUMA node (node {}): there is no remote memory to measure; \
             writing the local figures.",
            topology.nodes.keys().next().copied().unwrap_or(0)
        );
    }
    let mut pairs = Vec::new();
    for from in &cpu_nodes {
        for &to in topology.nodes.keys() {
            let figures = measure::pair(from.id, &from.cpus, to, plan)?;
            println!(
                "node {} -> memory on node {}: latency {:.1} ns, bandwidth {:.2} GB/s",
                figures.from,
                figures.to,
                figures.latency_ns,
                figures.bandwidth_bytes_per_second / 1e9
            );
            pairs.push(figures);
        }
    }
    let calibration = Calibration {
        version: VERSION,
        measured_unix_seconds: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        buffer_bytes: plan.buffer_bytes as u64,
        pairs,
    };
    for r in calibration.ratios().iter().filter(|r| r.from != r.to) {
        println!(
            "node {} -> node {}: latency x{:.2}, bandwidth x{:.2} of node {}'s own",
            r.from, r.to, r.latency_ratio, r.bandwidth_ratio, r.from
        );
    }
    calibration.write(&args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}
