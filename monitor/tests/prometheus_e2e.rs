//! End to end with a real Prometheus: Debian's `prometheus` scrapes the real daemon, which
//! watches a real busy KVM guest whose fixture GPU sits on socket 1 (two-socket-gpu fixture).
//! With the vCPU pinned to CPU 0 (the far socket) every query of every dashboard panel must
//! return data (the fleet panels from deploy/pinsight.recording.yml, loaded beside the alerts)
//! and the cross-socket alert (a copy of deploy/pinsight.rules.yml with a short `for`) must
//! fire; after `virsh vcpupin` to CPU 1 (the GPU's node) the alert must resolve.
//! The landing page `/` is checked on the way.

mod common;
#[path = "prometheus_e2e/server.rs"]
mod server;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_value, repo_root, require_host, wait_for, TestVm, VmOptions};
use server::{listening_addresses, Prometheus};

const GPU: &str = "0000:3b:00.0";
/// The alert under test and the `for` of its test copy (10m in the shipped rules).
const ALERT: &str = "PinsightVmRemoteRatioHigh";
const TEST_FOR: &str = "5s";
/// Value of Grafana's $__rate_interval and $__interval: 30 scrapes at 1s.
const RATE_INTERVAL: &str = "30s";

/// `rules` with the `for:` of alert `alert` replaced by `duration`; panics unless exactly one
/// such line exists (the test must not silently run the shipped 10m).
fn rules_with_short_for(rules: &str, alert: &str, duration: &str) -> String {
    let (mut out, mut in_alert, mut replaced) = (Vec::new(), false, 0);
    for line in rules.lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            in_alert = name.trim() == alert;
        }
        if in_alert && trimmed.starts_with("for:") {
            let indent = &line[..line.len() - trimmed.len()];
            out.push(format!("{indent}for: {duration}"));
            replaced += 1;
            continue;
        }
        out.push(line.to_string());
    }
    assert_eq!(
        replaced, 1,
        "expected one `for:` line in alert {alert} of deploy/pinsight.rules.yml"
    );
    out.join("\n") + "\n"
}

/// Every panel query of both dashboards with the variables filled in, from
/// dashboards/extract_queries.py --json: objects with dashboard, panel, ref_id and expr.
fn dashboard_queries(instance: &str, domain: &str) -> Vec<Value> {
    let script = repo_root().join("dashboards/extract_queries.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(["--json", instance, domain, RATE_INTERVAL])
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed ({}): {}",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let queries: Vec<Value> =
        serde_json::from_slice(&out.stdout).expect("extract_queries.py --json prints JSON");
    assert!(
        queries.len() > 20,
        "only {} dashboard queries",
        queries.len()
    );
    queries
}

/// The pinsight_* families a query reads that the daemon does not export right now.
fn families_missing_from(expr: &str, metrics: &str) -> Vec<String> {
    let mut missing: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("pinsight_"))
        .filter(|w| !metrics.contains(&format!("# TYPE {w} ")))
        .map(str::to_string)
        .collect();
    missing.sort();
    missing.dedup();
    missing
}

/// Sends every query to Prometheus; retries the empty ones for up to `patience` (rates need
/// two samples); returns each query that still fails, with the reason.
fn failing_queries(
    prometheus: &Prometheus,
    queries: &[Value],
    patience: Duration,
) -> Vec<(Value, String)> {
    let deadline = Instant::now() + patience;
    let mut failures: Vec<(Value, String)> =
        queries.iter().map(|q| (q.clone(), String::new())).collect();
    loop {
        failures.retain_mut(|(q, why)| {
            match prometheus.query(q["expr"].as_str().unwrap_or_default()) {
                Ok(result) if !result.is_empty() => return false,
                Ok(_) => *why = "no data".to_string(),
                Err(e) => *why = e,
            }
            true
        });
        if failures.is_empty() || Instant::now() >= deadline {
            return failures;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// One line per failing query: where it is, why, the query, and the pinsight families it
/// reads that the daemon does not export.
fn describe_failure(query: &Value, why: &str, metrics: &str) -> String {
    let expr = query["expr"].as_str().unwrap_or_default();
    let mut line = format!(
        "{} / {:?} ({}): {why}\n      {expr}",
        query["dashboard"].as_str().unwrap_or_default(),
        query["panel"].as_str().unwrap_or_default(),
        query["ref_id"].as_str().unwrap_or_default(),
    );
    let missing = families_missing_from(expr, metrics);
    if !missing.is_empty() {
        line.push_str(&format!(
            "\n      not exported by the daemon: {}",
            missing.join(", ")
        ));
    }
    line
}

/// The value of the first sample an instant query returns; panics naming the query.
fn first_value(prometheus: &Prometheus, expr: &str) -> f64 {
    let result = prometheus
        .query(expr)
        .unwrap_or_else(|e| panic!("query {expr}: {e}"));
    result
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample for {expr}: {result:?}"))
}

/// The active alert `ALERT` for `domain`, if any.
fn remote_ratio_alert(prometheus: &Prometheus, domain: &str) -> Option<Value> {
    prometheus
        .alerts()
        .into_iter()
        .find(|a| a["labels"]["alertname"] == ALERT && a["labels"]["domain"] == domain)
}

/// The remote ratio the landing page shows in the row of `domain`, in percent.
fn landing_page_ratio(page: &str, domain: &str) -> f64 {
    let row = page
        .lines()
        .find(|l| l.contains(&format!("<td>{domain}</td>")))
        .unwrap_or_else(|| panic!("no row for {domain} on the landing page:\n{page}"));
    let cells: Vec<&str> = row
        .split("<td>")
        .skip(1)
        .filter_map(|c| c.split("</td>").next())
        .collect();
    cells
        .last()
        .and_then(|c| c.strip_suffix('%'))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no remote ratio in percent in the last cell of {row:?}"))
}

#[test]
fn dashboards_have_data_and_the_cross_socket_alert_fires_and_resolves() {
    require_host();
    let vm = TestVm::start(VmOptions {
        name_hint: "prom",
        busy: true,
        spin_iterations: 2000,
        metadata_xml: Some(common::gpu_metadata(GPU)),
        ..VmOptions::default()
    });
    vm.pin_vcpu(0, "0");
    let domain = vm.name.as_str();
    // --bpf-stats: the probe cost panels show the kernel's per-program run time.
    // --mode recommend: the panels of pinsight_repin_recommended show the recommendation for
    // the far-pinned VM, and nothing is repinned. The policy's capacity check counts the pinned
    // vCPUs of every VM on the host, and VM tests running at the same time may pin theirs to
    // CPU 1 (the GPU's node and the only CPU of the target), so oversubscription is allowed.
    // The GPU's interrupt lines come from the /proc fixture (no VFIO here), so the interrupt
    // panels have data; the VM's memory by node is the real one (all on node 0: remote).
    let irq_proc = repo_root().join("monitor/tests/fixtures/proc/two-socket-gpu");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = 0.25\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 3.0\n\
             irq_proc_root = {:?}\n[policy]\nmax_oversubscription = 8.0\n",
            irq_proc.display().to_string()
        ),
        &["--bpf-stats", "--mode", "recommend"],
    );
    wait_for(
        Duration::from_secs(20),
        "the VM in pinsight_domain_info",
        || {
            metric_value(
                &daemon.metrics(),
                "pinsight_domain_info",
                &[("domain", domain), ("gpus", GPU), ("gpu_nodes", "1")],
            )
        },
    );

    let shipped = std::fs::read_to_string(repo_root().join("deploy/pinsight.rules.yml"))
        .expect("read deploy/pinsight.rules.yml");
    // The fleet's recording rules too: the host dashboard reads their series.
    let recording = std::fs::read_to_string(repo_root().join("deploy/pinsight.recording.yml"))
        .expect("read deploy/pinsight.recording.yml");
    let recording_groups = recording
        .split_once("\ngroups:\n")
        .map(|(_, groups)| groups)
        .expect("deploy/pinsight.recording.yml has a top-level groups: list");
    let prometheus = Prometheus::start(
        &daemon.addr,
        &(rules_with_short_for(&shipped, ALERT, TEST_FOR) + recording_groups),
    );
    let listening = listening_addresses(prometheus.pid());
    assert!(
        !listening.is_empty() && listening.iter().all(|a| a.starts_with("127.0.0.1:")),
        "Prometheus must listen on loopback only, listens on {listening:?}"
    );

    // Far socket: the alert goes pending, then fires after the test copy's `for`.
    let started = Instant::now();
    let alert = wait_for(
        Duration::from_secs(60),
        &format!("{ALERT} for {domain} to fire"),
        || remote_ratio_alert(&prometheus, domain).filter(|a| a["state"] == "firing"),
    );
    eprintln!(
        "{ALERT} fired {:.1}s after Prometheus started",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert_eq!(alert["labels"]["instance"], daemon.addr.as_str(), "{alert}");
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains(&format!("virsh vcpupin {domain}")),
        "the description must name the VM and the fix: {description}"
    );

    // The landing page, while the VM runs remote.
    let page = http_get(&daemon.addr, "/").expect("GET /");
    let version = format!("pinsight {}", env!("CARGO_PKG_VERSION"));
    assert!(page.contains(&version), "no {version:?} on /:\n{page}");
    assert!(
        page.contains("href=\"/metrics\""),
        "no link to /metrics on /:\n{page}"
    );
    assert!(page.contains(GPU), "no GPU {GPU} on /:\n{page}");
    let ratio = landing_page_ratio(&page, domain);
    assert!(
        ratio > 50.0,
        "/ shows remote ratio {ratio}% while pinned far"
    );

    // Every panel's query returns data.
    let queries = dashboard_queries(&daemon.addr, domain);
    let failures = failing_queries(&prometheus, &queries, Duration::from_secs(15));
    let metrics = daemon.metrics();
    let failures: Vec<String> = failures
        .iter()
        .map(|(q, why)| describe_failure(q, why, &metrics))
        .collect();
    // The dashboards' own arithmetic on the real counters: all time so far was remote.
    let share_panel = "Share of GPU VMs' vCPU time running remote";
    let share = queries
        .iter()
        .find(|q| q["panel"] == share_panel)
        .unwrap_or_else(|| panic!("no panel {share_panel:?} in the host dashboard"));
    let share = first_value(&prometheus, share["expr"].as_str().unwrap_or_default());
    assert!(
        share > 0.5,
        "{share_panel:?} shows {share} while pinned far"
    );
    eprintln!(
        "{} of {} dashboard queries returned data",
        queries.len() - failures.len(),
        queries.len()
    );

    // Near socket: the remote ratio falls under the threshold and the alert resolves.
    vm.pin_vcpu(0, "1");
    let moved = Instant::now();
    wait_for(
        Duration::from_secs(30),
        &format!("{ALERT} for {domain} to resolve after the repin"),
        || {
            remote_ratio_alert(&prometheus, domain)
                .is_none()
                .then_some(())
        },
    );
    eprintln!(
        "{ALERT} resolved {:.1}s after the repin",
        moved.elapsed().as_secs_f64()
    );
    let selector = format!("pinsight_domain_remote_ratio{{job=\"pinsight\", domain=\"{domain}\"}}");
    let value = first_value(&prometheus, &selector);
    assert!(value <= 0.5, "remote ratio {value} after pinning near");

    assert!(
        failures.is_empty(),
        "{} dashboard queries returned no data (instance {}, domain {domain}):\n  - {}",
        failures.len(),
        daemon.addr,
        failures.join("\n  - ")
    );
}
