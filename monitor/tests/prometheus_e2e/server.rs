//! A real Prometheus (Debian's `prometheus` package) for the end-to-end test: started on a
//! loopback port with a temporary data directory, killed by its pid; the directory goes with it.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::common::{free_port, http_get, http_get_query, wait_for};

/// The Prometheus server binary of Debian's `prometheus` package.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A running Prometheus that scrapes one target as job "pinsight" and loads one rule file.
pub struct Prometheus {
    child: Child,
    /// "127.0.0.1:PORT" of its HTTP API.
    pub addr: String,
    dir: TempDir,
}

impl Prometheus {
    /// Starts Prometheus in a fresh temporary directory holding its config, `rules_yaml` (as
    /// the only rule file), its TSDB and its log; scrapes and evaluates every second.
    pub fn start(target: &str, rules_yaml: &str) -> Prometheus {
        Prometheus::start_with(target, rules_yaml, "")
    }

    /// [`Prometheus::start`] with `job_yaml` (lines indented 4 spaces: `scheme`,
    /// `tls_config`, `basic_auth`...) added to the scrape job.
    pub fn start_with(target: &str, rules_yaml: &str, job_yaml: &str) -> Prometheus {
        assert!(
            Path::new(PROMETHEUS).is_file(),
            "{PROMETHEUS} is missing: install the Debian package 'prometheus' (scripts/setup.sh does)"
        );
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let dir = tempfile::Builder::new()
            .prefix("pinsight-prometheus-e2e-")
            .tempdir()
            .expect("create a temporary directory for Prometheus");
        let rules = dir.path().join("pinsight.rules.yml");
        std::fs::write(&rules, rules_yaml).expect("write the rules copy");
        let config = dir.path().join("prometheus.yml");
        // scrape_timeout must not exceed scrape_interval.
        let yaml = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: pinsight\n{job_yaml}    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display()
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        let log = std::fs::File::create(dir.path().join("prometheus.log"))
            .expect("create prometheus.log");
        let log_err = log.try_clone().expect("clone the log file handle");
        let mut command = Command::new(PROMETHEUS);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            // Loopback only: this is a test instance, nothing else may reach it.
            .arg(format!("--web.listen-address={addr}"))
            .arg("--storage.tsdb.retention.time=1h")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent. It makes the
        // kernel stop Prometheus if the test process dies without running Drop (e.g. a timeout).
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {PROMETHEUS}: {e}"));
        let mut prometheus = Prometheus { child, addr, dir };
        let addr = prometheus.addr.clone();
        wait_for(Duration::from_secs(30), "Prometheus to be ready", || {
            if let Ok(Some(status)) = prometheus.child.try_wait() {
                panic!(
                    "prometheus exited with {status}:\n{}",
                    prometheus.log_tail()
                );
            }
            http_get(&addr, "/-/ready").ok()
        });
        prometheus
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Runs an instant query through /api/v1/query; the result vector, or why there is none.
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let body = self.api("/api/v1/query", &[("query", expr)])?;
        match body["data"]["resultType"].as_str() {
            Some("vector") | Some("matrix") => Ok(body["data"]["result"]
                .as_array()
                .cloned()
                .unwrap_or_default()),
            // A scalar or string result is one value.
            Some(_) => Ok(vec![body["data"]["result"].clone()]),
            None => Err(format!("no resultType in {body}")),
        }
    }

    /// The active (pending or firing) alerts from /api/v1/alerts.
    pub fn alerts(&self) -> Vec<Value> {
        let body = self
            .api("/api/v1/alerts", &[])
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()));
        body["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// GETs an API path with `query` and checks Prometheus's `status: success` envelope.
    fn api(&self, path: &str, query: &[(&str, &str)]) -> Result<Value, String> {
        let text = http_get_query(&self.addr, path, query)?;
        let body: Value =
            serde_json::from_str(&text).map_err(|e| format!("{path}: {e}: {text}"))?;
        if body["status"] != "success" {
            return Err(format!("{path} {query:?}: {body}"));
        }
        Ok(body)
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(30)..].join("\n");
        format!("--- last lines of the Prometheus log ---\n{tail}")
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        crate::common::stop_child(&mut self.child);
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
        // `dir` (TempDir) removes itself after this.
    }
}

/// Local addresses of the TCP sockets in LISTEN state that process `pid` holds, e.g.
/// "127.0.0.1:9090", from /proc/PID/fd (socket inodes) and /proc/PID/net/tcp{,6}.
pub fn listening_addresses(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter_map(|link| {
                    let link = link.to_string_lossy().into_owned();
                    let inode = link.strip_prefix("socket:[")?.strip_suffix(']')?;
                    Some(inode.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        // "sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ..."
        for fields in text
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
        {
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            if *state == "0A" && inodes.iter().any(|i| i == inode) {
                out.push(decode_proc_address(local));
            }
        }
    }
    out
}

/// "0100007F:1F90" -> "127.0.0.1:8080"; IPv6 addresses are returned as 32 hex digits.
fn decode_proc_address(hex: &str) -> String {
    let (ip, port) = hex.split_once(':').unwrap_or((hex, "0"));
    let port = u16::from_str_radix(port, 16).unwrap_or(0);
    if ip.len() == 8 {
        // IPv4 in host (little-endian) byte order.
        let n = u32::from_str_radix(ip, 16).unwrap_or(0);
        let [a, b, c, d] = n.to_le_bytes();
        format!("{a}.{b}.{c}.{d}:{port}")
    } else {
        format!("[{ip}]:{port}")
    }
}
