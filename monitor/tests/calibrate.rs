//! `pinsight calibrate` on this host (one NUMA node: it says so and writes the local
//! figures), and the daemon exporting a calibration file: the ratios on /metrics, and a
//! corrupt file, reloaded, as a problem line naming the file while the daemon runs on.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_value, require_host, wait_for};
use pinsight::calibration::Calibration;

fn calibrate(output: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_pinsight"))
        .args(["calibrate", "--buffer-mib", "32", "--chase-steps", "200000"])
        .arg("--output")
        .arg(output)
        .output()
        .expect("run pinsight calibrate");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "pinsight calibrate failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn calibrate_measures_this_host_and_the_daemon_exports_the_file() {
    require_host();
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = dir.path().join("calibration.json");
    let said = calibrate(&file);
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .expect("/sys/devices/system/node")
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.strip_prefix("node")
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .count();
    assert_eq!(nodes, 1, "this test describes a one-node host (TESTBED.md)");
    assert!(
        said.contains("This host has one NUMA node (node 0)"),
        "{said}"
    );
    let c = Calibration::read(&file)
        .expect("a valid calibration file")
        .expect("the file was written");
    assert_eq!(c.pairs.len(), 1, "{c:?}");
    let p = c.pairs[0];
    assert_eq!((p.from, p.to), (0, 0));
    // A dependent DRAM load takes tens to hundreds of ns, never under a ns or over 10 us; a
    // sequential read streams 1 to 1000 GB/s: outside these, the measurement is broken.
    assert!((1.0..10_000.0).contains(&p.latency_ns), "{p:?}");
    assert!((1e9..1e12).contains(&p.bandwidth_bytes_per_second), "{p:?}");

    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!(
            "tick_seconds = 0.25\ncalibration_file = {:?}\n",
            file.display().to_string()
        ),
        &[],
    );
    let metrics = daemon.metrics();
    let ratio = |m: &str| {
        metric_value(
            m,
            "pinsight_node_memory_latency_ratio",
            &[("from", "0"), ("to", "0")],
        )
    };
    assert_eq!(ratio(&metrics), Some(1.0), "{metrics}");
    assert_eq!(
        metric_value(&metrics, "pinsight_calibration_timestamp_seconds", &[]),
        Some(c.measured_unix_seconds)
    );

    std::fs::write(&file, "{\"version\": 1, \"pairs\": [").expect("corrupt the file");
    daemon.signal(libc::SIGHUP);
    let problem = wait_for(Duration::from_secs(10), "a problem naming the file", || {
        let text = http_get(&daemon.addr, "/status.json").ok()?;
        let view: serde_json::Value = serde_json::from_str(&text).ok()?;
        view["problems"].as_array()?.iter().find_map(|p| {
            let p = p.as_str()?;
            p.contains(&file.display().to_string())
                .then(|| p.to_string())
        })
    });
    assert!(problem.contains("calibration file"), "{problem}");
    assert_eq!(
        ratio(&daemon.metrics()),
        None,
        "no figures from a corrupt file"
    );
}
