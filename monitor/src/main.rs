//! The `pinsight` command: the daemon and the terminal tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use pinsight::config::{Config, Mode};
use pinsight::inventory::{HostPaths, Inventory, Libvirt};
use pinsight::topology::Topology;

/// Sees, explains and fixes GPU VMs whose vCPUs run on the other socket than their GPU.
#[derive(Parser)]
#[command(name = "pinsight", version, about, long_about = None)]
struct Cli {
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
    Check(HostArgs),
    /// What the repin policy in enforce mode would do now, and why; changes nothing.
    Plan(PlanArgs),
    /// Put back the pins a VM had before pinsight first acted on it (live), and record that.
    Restore(RestoreArgs),
}

/// Where the host's facts come from.
#[derive(Args, Clone)]
struct HostArgs {
    /// Config file (TOML); see deploy/pinsight.toml for every key and its default.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Root of sysfs; point it at a fixture directory to describe another host's topology.
    #[arg(long)]
    sysfs_root: Option<PathBuf>,
    /// libvirt connection URI.
    #[arg(long)]
    libvirt_uri: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Address for /metrics, / and /status.json (default 0.0.0.0:9812).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Turn on kernel.bpf_stats_enabled so probe run time is exported (costs a little on
    /// every probe run; off by default, and never turned on silently).
    #[arg(long)]
    bpf_stats: bool,
    /// Repin policy mode (overrides policy.mode): observe, recommend or enforce.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
}

#[derive(Args)]
struct PlanArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// A running daemon (host:port) whose /status.json gives each vCPU's remote share; default
    /// the config's listen address. Without one, only the allowed-CPU rule decides.
    #[arg(long)]
    addr: Option<String>,
    /// Instead of a plan, show the pins DOMAIN had before pinsight first acted on it.
    #[arg(long, value_name = "DOMAIN")]
    undo: Option<String>,
}

#[derive(Args)]
struct RestoreArgs {
    #[command(flatten)]
    host: HostArgs,
    /// The libvirt domain name.
    domain: String,
}

#[derive(Args)]
struct TopologyArgs {
    #[command(flatten)]
    host: HostArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct StatusArgs {
    /// The daemon's address (host:port).
    #[arg(long, default_value = "127.0.0.1:9812")]
    addr: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

fn load_config(host: &HostArgs) -> anyhow::Result<Config> {
    let mut config = match &host.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    if let Some(root) = &host.sysfs_root {
        config.sysfs_root = root.clone();
    }
    if let Some(uri) = &host.libvirt_uri {
        config.libvirt_uri = uri.clone();
    }
    Ok(config)
}

fn read_topology(config: &Config) -> anyhow::Result<Topology> {
    let topology = Topology::read(&config.sysfs_root).with_context(|| {
        format!(
            "reading the host topology from {}",
            config.sysfs_root.display()
        )
    })?;
    for w in &topology.warnings {
        tracing::warn!("topology: {w}");
    }
    Ok(topology)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Topology(args) => topology(args),
        Command::Status(args) => status(args),
        Command::Check(args) => check(args),
        Command::Plan(args) => plan(args),
        Command::Restore(args) => restore(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pinsight: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let mut config = load_config(&args.host)?;
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Some(mode) = args.mode {
        config.policy.mode = mode;
    }
    config.validate(std::path::Path::new("command line"))?;
    if args.bpf_stats {
        std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1")
            .context("--bpf-stats: cannot set kernel.bpf_stats_enabled")?;
        tracing::info!("kernel.bpf_stats_enabled set to 1 (--bpf-stats)");
    }
    let topology = read_topology(&config)?;
    tracing::info!(
        sysfs_root = %config.sysfs_root.display(),
        sockets = topology.sockets().len(),
        nodes = topology.nodes.len(),
        cpus = topology.cpus.len(),
        "topology read"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let shared = pinsight::daemon::shared();
        let stop = Arc::new(AtomicBool::new(false));
        let listen = config.listen;
        // The engine is created inside the runtime so aya-log can read the probes' log buffer.
        let engine = pinsight::daemon::Engine::new(config, topology, shared.clone());
        let engine_thread =
            pinsight::daemon::spawn(engine, stop.clone()).context("starting the engine thread")?;
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing a SIGTERM handler cannot fail in a fresh runtime");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            tracing::info!("shutting down: detaching probes");
        };
        let served = pinsight::http::serve(listen, shared, shutdown)
            .await
            .with_context(|| format!("serving HTTP on {listen}"));
        stop.store(true, Ordering::Relaxed);
        let _ = engine_thread.join();
        served
    })
}

fn host_paths(config: &Config) -> HostPaths {
    HostPaths {
        sysfs_root: config.sysfs_root.clone(),
        qemu_run_dir: config.qemu_run_dir.clone(),
        ..HostPaths::default()
    }
}

fn topology(args: TopologyArgs) -> anyhow::Result<()> {
    let config = load_config(&args.host)?;
    let topology = read_topology(&config)?;
    let inventory = Libvirt::new(&config.libvirt_uri)
        .scan(&topology, &host_paths(&config))
        .map_err(|e| e.to_string());
    if args.json {
        let report = pinsight::cli::TopologyReport {
            topology: &topology,
            inventory: inventory.as_ref().ok(),
            libvirt_error: inventory.as_ref().err().cloned(),
        };
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!(
            "{}",
            pinsight::cli::render_topology(&topology, inventory.as_ref().map_err(|e| e.clone()))
        );
    }
    Ok(())
}

fn status(args: StatusArgs) -> anyhow::Result<()> {
    let status = pinsight::cli::fetch_status(&args.addr).map_err(anyhow::Error::msg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", pinsight::status::render_text(&status));
    }
    Ok(())
}

fn check(args: HostArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    config.validate(std::path::Path::new("command line"))?;
    let topology = read_topology(&config)?;
    println!(
        "config ok: listen {}, sysfs {} ({} sockets, {} nodes, {} CPUs), libvirt {}",
        config.listen,
        config.sysfs_root.display(),
        topology.sockets().len(),
        topology.nodes.len(),
        topology.cpus.len(),
        config.libvirt_uri
    );
    Ok(())
}

/// The running VMs, with libvirt's connection for acting on them.
fn scan(config: &Config, topology: &Topology) -> anyhow::Result<(Libvirt, Inventory)> {
    let mut libvirt = Libvirt::new(&config.libvirt_uri);
    let inventory = libvirt.scan(topology, &host_paths(config))?;
    for p in &inventory.problems {
        tracing::warn!("{p}");
    }
    Ok((libvirt, inventory))
}

fn plan(args: PlanArgs) -> anyhow::Result<()> {
    let config = load_config(&args.host)?;
    config.validate(std::path::Path::new("command line"))?;
    let topology = read_topology(&config)?;
    let (mut libvirt, inventory) = scan(&config, &topology)?;
    if let Some(name) = &args.undo {
        let vm = inventory
            .vms
            .iter()
            .find(|vm| &vm.name == name)
            .with_context(|| format!("no running domain {name} in {}", config.libvirt_uri))?;
        let record = pinsight::remediate::read_record(&libvirt.lookup(name)?, name)?;
        let current = vm
            .vcpus
            .iter()
            .map(|t| (t.vcpu, t.allowed_cpus.clone()))
            .collect();
        if args.json {
            let report =
                serde_json::json!({ "domain": name, "record": record, "current": current });
            println!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            print!("{}", pinsight::policy::render_undo(name, &record, &current));
        }
        return Ok(());
    }
    let addr = args.addr.unwrap_or_else(|| {
        let mut listen = config.listen;
        if listen.ip().is_unspecified() {
            listen.set_ip([127, 0, 0, 1].into());
        }
        listen.to_string()
    });
    let (ratios, source) = match pinsight::cli::fetch_status(&addr) {
        Ok(view) => (
            view.vcpu_remote_ratios(),
            format!("remote shares from the daemon at {addr}"),
        ),
        Err(e) => (
            Default::default(),
            format!("no remote shares ({e}): deciding by allowed CPUs alone"),
        ),
    };
    // The decision is the same in every mode; only the daemon's loop acts on it.
    let plan =
        pinsight::policy::Policy::new(config.policy.clone()).evaluate(&pinsight::policy::Inputs {
            topology: &topology,
            vms: &inventory.vms,
            ratios: &ratios,
            now: pinsight::policy::unix_now(),
        });
    if args.json {
        let report = serde_json::json!({ "ratios": source, "plan": plan });
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("What `enforce` would do now (nothing is changed); {source}.\n");
        print!("{}", pinsight::policy::render_plan(&plan));
    }
    Ok(())
}

fn restore(args: RestoreArgs) -> anyhow::Result<()> {
    let config = load_config(&args.host)?;
    config.validate(std::path::Path::new("command line"))?;
    let topology = read_topology(&config)?;
    let (mut libvirt, inventory) = scan(&config, &topology)?;
    let name = &args.domain;
    let vm = inventory
        .vms
        .iter()
        .find(|vm| &vm.name == name)
        .with_context(|| format!("no running domain {name} in {}", config.libvirt_uri))?;
    let domain = libvirt.lookup(name)?;
    let action = pinsight::remediate::restore(
        &domain,
        vm,
        config.policy.persistent,
        pinsight::policy::unix_now(),
    )?;
    println!("{name}: {}", pinsight::policy::record::describe(&action));
    if vm.spec.policy.repin != Some(false) {
        println!(
            "note: a daemon in enforce mode may repin it after policy.cooldown_seconds ({}s); \
             opt the VM out with <pinsight:policy repin=\"off\"/> to keep these pins",
            config.policy.cooldown_seconds
        );
    }
    Ok(())
}
