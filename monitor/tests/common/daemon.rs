//! A real `pinsight run` process for integration tests, stopped (by its pid) on drop. Its
//! config and log live in a temporary directory, kept when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{free_port, http_get, metric_value, repo_root, wait_for};

/// Fresh publishes in a row that must show the same value for `Daemon::settled`.
pub const SETTLED_PUBLISHES: usize = 3;

/// The daemon under test.
pub struct Daemon {
    child: Child,
    /// "127.0.0.1:PORT".
    pub addr: String,
    /// Its stderr log.
    pub log: PathBuf,
    /// Its instance lock (its own, so tests do not depend on /run/pinsight).
    pub lock_file: PathBuf,
    /// Its config file (rewrite it and send SIGHUP to reload).
    pub config: PathBuf,
    /// Holds the config and the log; None once kept.
    dir: Option<TempDir>,
}

/// A fixture sysfs tree by name.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("monitor/tests/fixtures/sysfs").join(name)
}

impl Daemon {
    /// Starts `pinsight run` with `config_toml` (listen and sysfs_root are added) and waits
    /// until it has published its first tick.
    pub fn start(sysfs_root: &Path, config_toml: &str, extra_args: &[&str]) -> Daemon {
        Daemon::start_with_env(sysfs_root, config_toml, extra_args, &[])
    }

    /// [`Daemon::start`] with extra environment variables (NOTIFY_SOCKET, ...).
    pub fn start_with_env(
        sysfs_root: &Path,
        config_toml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let mut daemon = Daemon::spawn_with_env(sysfs_root, config_toml, extra_args, env);
        let addr = daemon.addr.clone();
        // Served is not enough: the first view is published by the engine's first tick
        // (before it /metrics shows an empty host), so wait for its tick timestamp.
        daemon.wait_until("the daemon's first published tick", || {
            http_get(&addr, "/metrics").ok().is_some_and(|m| {
                metric_value(&m, "pinsight_engine_last_tick_timestamp_seconds", &[])
                    .is_some_and(|t| t > 0.0)
            })
        });
        daemon
    }

    /// Starts `pinsight run` like [`Daemon::start`] without waiting for it (for endpoints
    /// the plain-HTTP client cannot reach: TLS, basic auth).
    pub fn spawn(sysfs_root: &Path, config_toml: &str, extra_args: &[&str]) -> Daemon {
        Daemon::spawn_with_env(sysfs_root, config_toml, extra_args, &[])
    }

    /// [`Daemon::spawn`] with extra environment variables.
    pub fn spawn_with_env(
        sysfs_root: &Path,
        config_toml: &str,
        extra_args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::Builder::new()
            .prefix("pinsight-test-daemon-")
            .tempdir()
            .expect("create a temporary directory for the daemon");
        let config = dir.path().join("pinsight.toml");
        let log = dir.path().join("pinsight.log");
        let lock_file = dir.path().join("pinsight.lock");
        let toml = format!(
            "listen = \"{addr}\"\nsysfs_root = \"{}\"\n{config_toml}",
            sysfs_root.display()
        );
        std::fs::write(&config, toml).expect("write test config");
        let stderr = std::fs::File::create(&log).expect("create daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_pinsight"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--lock-file")
            .arg(&lock_file)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn pinsight run");
        Daemon {
            child,
            addr,
            log,
            lock_file,
            config,
            dir: Some(dir),
        }
    }

    /// Polls `ready` for up to 30 s; panics with the log if the daemon exits first.
    pub fn wait_until(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        wait_for(Duration::from_secs(30), what, || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("pinsight run exited with {status}:\n{}", self.log_text());
            }
            ready().then_some(())
        });
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Current /metrics body.
    pub fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics")
            .unwrap_or_else(|e| panic!("scrape failed: {e}\n{}", self.log_text()))
    }

    /// Waits until `value` of /metrics is the same in `SETTLED_PUBLISHES` fresh publishes in a
    /// row; returns it with the last /metrics read. For a counter that has stopped (a paused
    /// VM) this is its final value: the first fresh publish may come from a tick that read the
    /// maps just before the caller's change, the ones after it cannot. Needs `--bpf-stats`.
    pub fn settled(&self, what: &str, value: impl Fn(&str) -> f64) -> (f64, String) {
        // The daemon has no tick counter of its own. The sched_switch program's run count,
        // read at every publish with --bpf-stats, moves with every context switch on the host
        // (many per tick: the daemon's own threads switch), so a new count is a new publish.
        let publish = |m: &str| {
            metric_value(m, "pinsight_probe_runs_total", &[("probe", "sched_switch")])
                .unwrap_or_else(|| panic!("no sched_switch run count: start with --bpf-stats\n{m}"))
        };
        let mut last_publish = publish(&self.metrics());
        let mut same: Vec<f64> = Vec::new();
        let what = format!("{what} to settle over {SETTLED_PUBLISHES} publishes");
        wait_for(Duration::from_secs(30), &what, || {
            let m = self.metrics();
            let p = publish(&m);
            if p == last_publish {
                return None;
            }
            last_publish = p;
            let v = value(&m);
            if same.last() != Some(&v) {
                same.clear();
            }
            same.push(v);
            (same.len() >= SETTLED_PUBLISHES).then_some((v, m))
        })
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The first line of the log holding every one of `words` (colour codes taken out), once
    /// there is one within `timeout`.
    pub fn log_line(&self, timeout: Duration, words: &[&str]) -> String {
        wait_for(timeout, &format!("a log line with {words:?}"), || {
            plain(&self.log_text())
                .lines()
                .find(|l| words.iter().all(|w| l.contains(w)))
                .map(str::to_string)
        })
    }

    /// Sends `signal` (libc::SIGHUP, ...) to the daemon.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill on the pid of our own child, not yet reaped (Drop reaps it).
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({}, {signal}) failed", self.child.id());
    }

    /// Waits up to `timeout` for the daemon to exit; its exit status, or None if it runs on.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
        if std::thread::panicking() {
            if let Some(dir) = self.dir.take() {
                eprintln!("daemon config and log kept in {}", dir.keep().display());
            }
        }
    }
}

/// `text` without the ANSI colour codes the daemon's log carries ("\x1b[3mmade\x1b[0m=1").
fn plain(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC '[' parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
