//! A real `pinsight run` process for integration tests, killed (by its pid) on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, http_get, repo_root, wait_for};

/// The daemon under test.
pub struct Daemon {
    child: Child,
    /// "127.0.0.1:PORT".
    pub addr: String,
    /// Its stderr log.
    pub log: PathBuf,
    config: PathBuf,
}

/// A fixture sysfs tree by name.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("monitor/tests/fixtures/sysfs").join(name)
}

impl Daemon {
    /// Starts `pinsight run` with `config_toml` (listen and sysfs_root are added) and waits
    /// until it has published its first tick.
    pub fn start(sysfs_root: &Path, config_toml: &str, extra_args: &[&str]) -> Daemon {
        let mut daemon = Daemon::spawn(sysfs_root, config_toml, extra_args);
        let addr = daemon.addr.clone();
        daemon.wait_until("the daemon to serve /metrics", || {
            http_get(&addr, "/metrics")
                .ok()
                .filter(|m| m.contains("pinsight_build_info"))
                .is_some()
        });
        daemon
    }

    /// Starts `pinsight run` like [`Daemon::start`] without waiting for it (for endpoints
    /// the plain-HTTP client cannot reach: TLS, basic auth).
    pub fn spawn(sysfs_root: &Path, config_toml: &str, extra_args: &[&str]) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = std::env::temp_dir();
        let tag = format!("{}-{port}", std::process::id());
        let config = dir.join(format!("pinsight-test-{tag}.toml"));
        let log = dir.join(format!("pinsight-test-{tag}.log"));
        let toml = format!(
            "listen = \"{addr}\"\nsysfs_root = \"{}\"\n{config_toml}",
            sysfs_root.display()
        );
        std::fs::write(&config, toml).expect("write test config");
        let stderr = std::fs::File::create(&log).expect("create daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_pinsight"))
            .args(["run", "--config"])
            .arg(&config)
            .args(extra_args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn pinsight run");
        Daemon {
            child,
            addr,
            log,
            config,
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

    /// Current /metrics body.
    pub fn metrics(&self) -> String {
        http_get(&self.addr, "/metrics")
            .unwrap_or_else(|e| panic!("scrape failed: {e}\n{}", self.log_text()))
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        super::stop_child(&mut self.child);
        let _ = std::fs::remove_file(&self.config);
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
