//! The `pinsight` command: parses the arguments and hands each subcommand to its module in
//! `pinsight::cli`, where the command's logic and arguments live.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pinsight::cli::logging::LogFormat;
use pinsight::cli::{
    calibrate::CalibrateArgs, check::CheckArgs, plan::PlanArgs, restore::RestoreArgs, run::RunArgs,
    status::StatusArgs, top::TopArgs, topology::TopologyArgs,
};

/// Sees, explains and fixes GPU VMs whose vCPUs run on the other socket than their GPU.
#[derive(Parser)]
#[command(name = "pinsight", version, about, long_about = None)]
struct Cli {
    /// Log line format on stderr (text: human-readable; logfmt and json for log collectors).
    /// Colours only when stderr is a terminal; the level is RUST_LOG (default info).
    #[arg(long = "log.format", global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: eBPF probes, libvirt inventory, Prometheus metrics on --listen.
    Run(RunArgs),
    /// Show sockets, NUMA nodes, GPUs and every VM's vCPU threads with the CPUs they may use.
    Topology(TopologyArgs),
    /// Per VM and vCPU: where it ran (local / same socket / remote), from a running daemon.
    Status(StatusArgs),
    /// Validate a config file (and the sysfs root it names); exits non-zero with the reason.
    Check(CheckArgs),
    /// What the repin policy in enforce mode would do now, and why; changes nothing.
    Plan(PlanArgs),
    /// A live terminal view of a running daemon: VMs by remote ratio, overhead or exits.
    Top(TopArgs),
    /// Put back the pins a VM had before pinsight first acted on it (live), and record that.
    Restore(RestoreArgs),
    /// Measure node-to-node memory latency and bandwidth; write the daemon's calibration file.
    Calibrate(CalibrateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    pinsight::cli::logging::init(cli.log_format);
    let result = match cli.command {
        Command::Run(args) => pinsight::cli::run::execute(args),
        Command::Topology(args) => pinsight::cli::topology::execute(args),
        Command::Status(args) => pinsight::cli::status::execute(args),
        Command::Check(args) => pinsight::cli::check::execute(args),
        Command::Plan(args) => pinsight::cli::plan::execute(args),
        Command::Restore(args) => pinsight::cli::restore::execute(args),
        Command::Top(args) => pinsight::cli::top::execute(args),
        Command::Calibrate(args) => pinsight::cli::calibrate::execute(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Every variant's message carries its causes: print it once, not as a chain.
            eprintln!("pinsight: error: {e}");
            ExitCode::FAILURE
        }
    }
}
