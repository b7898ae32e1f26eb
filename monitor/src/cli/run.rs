//! `pinsight run`: the daemon. The engine (probes, inventory, policy) ticks on a thread of
//! its own; the HTTP endpoint runs on a one-worker async runtime until SIGINT or SIGTERM, or
//! until the engine ends, which is then an error: a daemon that serves stale numbers
//! forever is worse than one that stops and says why. SIGHUP reloads the config file: what
//! can change live does, what needs a restart is named, a bad file is refused.

use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use clap::Args;

use super::host::{read_topology, resolve, Flag, HostArgs};
use super::{CliError, BPF_STATS_SYSCTL};
use crate::config::Mode;
use crate::daemon::Reload;
use crate::lock::InstanceLock;

/// Arguments of `pinsight run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// Config file, sysfs root and libvirt URI.
    #[command(flatten)]
    pub host: HostArgs,
    /// Address for /metrics, / and /status.json (default 0.0.0.0:9812).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Turn on kernel.bpf_stats_enabled so probe run time is exported (costs a little on
    /// every probe run; off by default, and never turned on silently).
    #[arg(long)]
    pub bpf_stats: bool,
    /// Repin policy mode (overrides policy.mode): observe, recommend or enforce.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// The instance lock: one pinsight per host. A second `pinsight run` with the same file
    /// exits non-zero naming the holder's pid.
    #[arg(long, value_name = "FILE", default_value = crate::lock::DEFAULT_LOCK_FILE)]
    pub lock_file: PathBuf,
    /// TLS, basic auth and headers of the endpoint, in the Prometheus exporter-toolkit's
    /// web-config YAML (the file node_exporter takes); see deploy/web-config.yml.
    #[arg(long = "web.config.file", value_name = "FILE")]
    pub web_config_file: Option<PathBuf>,
    /// Serve /metrics only: / and /status.json (VM names, UUIDs, threads, host paths)
    /// answer 404.
    #[arg(long = "web.metrics-only")]
    pub web_metrics_only: bool,
}

impl RunArgs {
    /// The config flags given, the host's first.
    fn flags(&self) -> Vec<Flag> {
        let mut flags = self.host.flags();
        flags.extend(self.listen.map(Flag::Listen));
        flags.extend(self.mode.map(Flag::Mode));
        flags
    }
}

/// Switches on the kernel's per-program run-time statistics (`--bpf-stats`).
pub fn enable_bpf_stats() -> Result<(), CliError> {
    std::fs::write(BPF_STATS_SYSCTL, "1").map_err(|source| CliError::BpfStats { source })?;
    tracing::info!("kernel.bpf_stats_enabled set to 1 (--bpf-stats)");
    Ok(())
}

/// Raises the soft limit of open files to the hard one: the daemon keeps each VM's memory
/// stat files open (three per VM), so a host of hundreds of VMs passes the usual soft limit
/// of 1024. The hard limit (524288 under systemd) is left as it is; a low one is logged.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit with a valid resource and a pointer to a local.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if !raised || limit.rlim_cur < 4096 {
        tracing::warn!(
            open_files = limit.rlim_cur,
            "the open-files limit is low: each VM's memory figures hold three files open (LimitNOFILE= in the unit raises it)"
        );
    }
}

/// One malloc arena for the whole process instead of one per thread that allocates: the
/// engine, the libvirt worker and the HTTP thread each kept an arena of their own, a few MiB
/// resident apiece. Measured at 100 VMs x 8 vCPUs: 31.8 instead of 33.8 MiB, the same CPU
/// (BENCHMARKS.md); the few threads allocate too rarely to contend. Before any thread starts.
fn one_malloc_arena() {
    // SAFETY: mallopt only changes the allocator's settings; called before other threads.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, 1) };
}

/// Runs the daemon until a signal, or until its engine ends.
pub fn execute(args: RunArgs) -> Result<(), CliError> {
    one_malloc_arena();
    // Before anything else: a second instance must not load probes or touch a VM.
    let _lock = InstanceLock::acquire(&args.lock_file)?;
    raise_open_files_limit();
    let config = resolve(args.host.config.as_deref(), &args.flags())?;
    let topology = read_topology(&config)?;
    let web = super::check::web_config(args.web_config_file.as_deref())?;
    // Bound before any probe is loaded or setting changed: a second instance, or a port
    // taken, fails here having done nothing.
    let listener = crate::http::bind(config.listen)?;
    // After the checks that need no privilege, so a bad flag or sysfs root leaves the
    // kernel setting as it was.
    if args.bpf_stats {
        enable_bpf_stats()?;
    }
    tracing::info!(
        sysfs_root = %config.sysfs_root.display(),
        sockets = topology.sockets().len(),
        nodes = topology.nodes.len(),
        cpus = topology.cpus.len(),
        "topology read"
    );
    let start = |what| move |source| CliError::Start { what, source };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(start("the async runtime"))?;
    runtime.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(start("the SIGTERM handler"))?;
        let mut hup = signal(SignalKind::hangup()).map_err(start("the SIGHUP handler"))?;
        let reload: crate::daemon::Reload = Default::default();
        let (engine_reload, mut running) = (reload.clone(), config.clone());
        let listen = config.listen;
        let listener = tokio::net::TcpListener::from_std(listener)
            .map_err(|source| CliError::Serve { listen, source })?;
        let web = Arc::new(RwLock::new(Arc::new(web)));
        let reload_web = web.clone();
        let options = crate::http::Options {
            metrics_only: args.web_metrics_only,
        };
        let shared = crate::daemon::shared();
        let stop = Arc::new(AtomicBool::new(false));
        // Enforce mode pins QEMUs without libvirt itself: CAP_SYS_NICE stays; the numa_maps
        // fallback reads QEMU's page tables: CAP_SYS_PTRACE stays; enforce mode moving VM
        // memory calls migrate_pages: CAP_SYS_PTRACE and CAP_SYS_NICE stay (privilege.rs).
        let mut by_config = Vec::new();
        let enforce = config.policy.mode == crate::config::Mode::Enforce;
        if enforce && !config.qmp.sockets.is_empty() {
            by_config.push(crate::privilege::SYS_NICE_FOR_PROCESS_PINS);
        }
        if config.numa_maps_fallback().is_some() {
            by_config.push(crate::privilege::SYS_PTRACE_FOR_NUMA_MAPS);
        }
        if enforce && config.policy.memory == crate::config::FixMode::Enforce {
            by_config.extend(crate::privilege::FOR_MEMORY_MOVES);
        }
        // The engine is created inside the runtime so aya-log can read the probes' log buffer.
        let engine = crate::daemon::Engine::new(config, topology, shared.clone());
        // The probes are attached (or reported as skipped) by now.
        crate::privilege::drop_after_attach(&by_config);
        crate::daemon::notify::ready("started; first tick pending");
        let engine_stop = stop.clone();
        let (ended_tx, ended_rx) = tokio::sync::oneshot::channel();
        let engine_thread = std::thread::Builder::new()
            .name("pinsight-engine".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    engine.run(engine_stop, engine_reload)
                }));
                let _ = ended_tx.send(outcome.err().map(|p| crate::fatal::panic_message(&*p)));
            })
            .map_err(start("the engine thread"))?;
        let died = Arc::new(OnceLock::new());
        let engine_died = died.clone();
        let shutdown = async move {
            let mut ended_rx = ended_rx;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
                    _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
                    _ = hup.recv() => {
                        reload_config(&args, &mut running, &reload);
                        reload_web_config(&args, &reload_web);
                        continue;
                    }
                    ended = &mut ended_rx => {
                        let reason = match ended {
                            Ok(Some(panic)) => format!("it panicked: {panic}"),
                            _ => "it returned without being asked to stop".to_string(),
                        };
                        tracing::error!("the engine thread ended ({reason}): shutting down");
                        let _ = engine_died.set(reason);
                    }
                }
                break;
            }
            tracing::info!("detaching probes");
        };
        let served = crate::http::serve(listener, shared, web, options, shutdown)
            .await
            .map_err(|source| CliError::Serve { listen, source });
        stop.store(true, Ordering::Relaxed);
        // The engine stops within a tick, unless it waits inside a libvirt call (libvirtd
        // hung): then the process ends without it. No action is cut half-way that the
        // state journal cannot repair, and the kernel detaches the probes with the process.
        let deadline = std::time::Instant::now() + ENGINE_STOP_WAIT;
        while !engine_thread.is_finished() && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if engine_thread.is_finished() {
            let _ = engine_thread.join();
        } else {
            tracing::warn!(
                "the engine did not stop within {ENGINE_STOP_WAIT:?} (a libvirt call hangs?): \
                 exiting without it"
            );
        }
        served?;
        match died.get() {
            Some(reason) => Err(CliError::EngineEnded {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    })
}

/// How long a stopping daemon waits for its engine (systemd's stop timeout is far longer).
const ENGINE_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// SIGHUP: re-reads the config file the daemon was started with (the same flags still
/// override it) and hands what may change live to the engine, which also reads the files it
/// names again (`calibration_file`). A file that does not pass
/// validation is refused with the reason and the running configuration kept.
fn reload_config(args: &RunArgs, running: &mut crate::config::Config, reload: &Reload) {
    let Some(file) = args.host.config.as_deref() else {
        tracing::warn!("SIGHUP: no --config file to reload; nothing changed");
        return;
    };
    let new = match resolve(Some(file), &args.flags()) {
        Ok(new) => new,
        Err(e) => {
            tracing::error!("SIGHUP: {e}; keeping the running configuration");
            return;
        }
    };
    let (applied, restart) = running.live_update(&new);
    for key in restart {
        tracing::warn!(key, file = %file.display(), "SIGHUP: {key} changed but needs a restart; keeping the running value");
    }
    if applied == *running {
        // Still handed on: the files it names (calibration_file) may have changed.
        tracing::info!(file = %file.display(), "SIGHUP: configuration unchanged; the files it names are read again");
    }
    *running = applied.clone();
    match reload.lock() {
        Ok(mut slot) => *slot = Some(applied),
        Err(poisoned) => *poisoned.into_inner() = Some(applied),
    }
    tracing::info!(file = %file.display(), "SIGHUP: configuration accepted; the engine applies it at its next tick");
}

/// SIGHUP, endpoint side: re-reads `--web.config.file` (TLS, users, headers); a file that
/// does not load is refused with the reason and the running endpoint settings kept.
fn reload_web_config(args: &RunArgs, web: &crate::http::SharedWebConfig) {
    let Some(file) = args.web_config_file.as_deref() else {
        return;
    };
    match crate::http::WebConfig::load(file) {
        Ok(new) => {
            match web.write() {
                Ok(mut slot) => *slot = Arc::new(new),
                Err(poisoned) => *poisoned.into_inner() = Arc::new(new),
            }
            tracing::info!(file = %file.display(), "SIGHUP: web config reloaded (new connections use it)");
        }
        Err(e) => tracing::error!("SIGHUP: {e}; keeping the running web config"),
    }
}
