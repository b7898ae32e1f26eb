//! QEMU without libvirt, end to end on the real host: a `qemu-system-x86_64` started here with
//! KVM, the busy guest and a QMP socket (no libvirt domain), its vCPU thread pinned with
//! `taskset` to CPU 0 (socket 0 of the two-socket fixture, whose GPU sits on node 1), and the
//! real daemon told of the socket in `[qmp]`. The VM must show in /metrics with vmm="qemu"
//! and run time by locality that agrees with schedstat; sockets that hang, speak garbage or
//! are held by another client must each be a problem line naming the socket, in time.
//!
//! Each QEMU has a second QMP socket of the test's own (not in the daemon's globs) for
//! `stop`/`cont` and `query-cpus-fast`, so the test never keeps the daemon out of its socket.

mod common;
#[path = "qmp/qemu.rs"]
mod qemu;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::{http_get, metric_sum, metric_value, require_host, wait_for};
use qemu::{uuid, QemuVm};

const GPU: &str = "0000:3b:00.0";
const TICK: f64 = 0.25;
/// The daemon's per-socket deadline in these tests.
const QMP_TIMEOUT: f64 = 1.0;

fn daemon(sockets: &[&Path], gpus: &[(&str, &str)]) -> Daemon {
    let list: Vec<String> = sockets
        .iter()
        .map(|s| format!("{:?}", s.display().to_string()))
        .collect();
    let table: String = gpus
        .iter()
        .map(|(vm, gpu)| format!("\"{vm}\" = [\"{gpu}\"]\n"))
        .collect();
    let config = format!(
        "tick_seconds = {TICK}\nrescan_seconds = 0.5\nremote_ratio_window_seconds = 2.0\n\
         [qmp]\nsockets = [{}]\ntimeout_seconds = {QMP_TIMEOUT}\n[qmp.gpus]\n{table}",
        list.join(", ")
    );
    // Daemon::settled tells fresh publishes by the probe run counts.
    Daemon::start(&fixture("two-socket-gpu"), &config, &["--bpf-stats"])
}

fn run_total(metrics: &str, domain: &str) -> f64 {
    metric_sum(
        metrics,
        "pinsight_vcpu_run_seconds_total",
        &[("domain", domain), ("vcpu", "0")],
    )
}

fn run_at(metrics: &str, domain: &str, locality: &str) -> f64 {
    metric_value(
        metrics,
        "pinsight_vcpu_run_seconds_total",
        &[("domain", domain), ("vcpu", "0"), ("locality", locality)],
    )
    .unwrap_or_default()
}

#[test]
fn a_qemu_without_libvirt_is_measured_by_locality_and_agrees_with_schedstat() {
    require_host();
    let vm = QemuVm::start("locality", false);
    vm.pin("0");
    let daemon = daemon(&[&vm.qmp], &[(&vm.name, GPU)]);
    let domain = vm.name.as_str();
    let uuid = uuid(0);
    wait_for(
        Duration::from_secs(20),
        "the QEMU VM in pinsight_domain_info",
        || {
            let m = daemon.metrics();
            let labels = [
                ("domain", domain),
                ("vmm", "qemu"),
                ("gpus", GPU),
                ("gpu_nodes", "1"),
            ];
            metric_value(&m, "pinsight_domain_info", &labels)
        },
    );
    let m = daemon.metrics();
    let info = m
        .lines()
        .find(|l| l.starts_with("pinsight_domain_info") && l.contains(domain));
    assert!(info.is_some_and(|l| l.contains(&uuid[..8])), "{info:?}");

    // Fenced by QMP stop/cont like vm_locality.rs fences with virsh suspend/resume: the
    // paused thread does not run, so both counters cover the same stints.
    vm.stop();
    let total = |m: &str| run_total(m, domain);
    let (ours0, m0) = daemon.settled("run time of the stopped vCPU", total);
    let k0 = vm.schedstat_run_ns();
    vm.cont();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(3));
    vm.stop();
    let (ours1, m1) = daemon.settled("run time of the stopped vCPU", total);
    let k1 = vm.schedstat_run_ns();
    vm.cont();
    let kernel = (k1 - k0) as f64 / 1e9;
    let ours = ours1 - ours0;
    assert!(kernel > 0.2, "the busy vCPU ran only {kernel:.3}s in 3 s");
    let remote = run_at(&m1, domain, "remote") - run_at(&m0, domain, "remote");
    eprintln!(
        "QEMU without libvirt over {:.1}s: pinsight {ours:.6}s ({remote:.6}s remote), \
         schedstat {kernel:.6}s",
        started.elapsed().as_secs_f64()
    );
    common::assert_agrees_with_schedstat("QEMU without libvirt", ours, kernel);
    // Pinned to CPU 0, socket 0, while the GPU is on node 1: all of it remote.
    assert!(
        (remote - ours).abs() < 1e-6,
        "remote {remote:.6}s of {ours:.6}s"
    );
    let ratio = metric_value(&m1, "pinsight_domain_remote_ratio", &[("domain", domain)]);
    assert!(ratio.is_some_and(|r| r > 0.9), "remote ratio {ratio:?}");
}

/// A socket served in this process that accepts and then says nothing, or garbage.
fn fake_socket(path: &Path, garbage: bool) {
    let listener = UnixListener::bind(path).expect("bind a fake QMP socket");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            if garbage {
                let _ = stream.write_all(b"<html>this is not QMP</html>\n");
            }
            held.push(stream);
        }
    });
}

fn status(daemon: &Daemon) -> String {
    http_get(&daemon.addr, "/status.json").unwrap_or_else(|e| panic!("/status.json: {e}"))
}

#[test]
fn sockets_that_hang_or_speak_garbage_are_problems_in_time_and_the_vm_keeps_updating() {
    require_host();
    let mut vm = QemuVm::start("neighbours", false);
    let silent = vm.dir.join("silent.qmp");
    let garbage = vm.dir.join("garbage.qmp");
    fake_socket(&silent, false);
    fake_socket(&garbage, true);
    let started = Instant::now();
    let daemon = daemon(&[&vm.qmp, &silent, &garbage], &[(&vm.name, GPU)]);
    let domain = vm.name.as_str();
    let (silent_s, garbage_s) = (silent.display().to_string(), garbage.display().to_string());
    let problems = wait_for(Duration::from_secs(10), "both problem lines", || {
        let s = status(&daemon);
        (s.contains(&format!(
            "QMP socket {silent_s}: no answer to the greeting within 1.0 s"
        )) && s.contains(&format!("QMP socket {garbage_s}: the greeting: not JSON")))
        .then_some(s)
    });
    // First scan at start, then every rescan; each socket within its 1 s deadline (in
    // parallel), while the daemon itself took up to a few seconds to start.
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(8),
        "problem lines after {took:?}"
    );
    assert!(
        problems.contains(domain),
        "the real VM is listed: {problems}"
    );
    // The real VM's run time keeps growing while the other two sockets fail every scan.
    let m0 = daemon.metrics();
    std::thread::sleep(Duration::from_secs(2));
    let m1 = daemon.metrics();
    let grew = run_total(&m1, domain) - run_total(&m0, domain);
    assert!(grew > 0.2, "the VM's run time grew only {grew:.3}s in 2 s");
    let labels = [("domain", domain), ("vmm", "qemu")];
    assert_eq!(
        metric_value(&m1, "pinsight_domain_info", &labels),
        Some(1.0)
    );

    // QEMU exits: its VM leaves the inventory, and the socket it left behind refuses
    // connections, a problem line of its own naming it.
    let domain = domain.to_string();
    vm.kill();
    let stale = format!("QMP socket {}: cannot connect", vm.qmp.display());
    wait_for(Duration::from_secs(15), "the killed QEMU to leave", || {
        let info = metric_value(
            &daemon.metrics(),
            "pinsight_domain_info",
            &[("domain", &domain)],
        );
        let s = status(&daemon);
        (info.is_none() && s.contains(&stale) && s.contains("no process listens")).then_some(())
    });
}

#[test]
fn a_socket_held_by_another_client_still_gives_the_vcpu_threads_by_name() {
    require_host();
    let vm = QemuVm::start("held", true);
    // Another client (Kata's runtime, say) holds the daemon's socket for the whole test.
    let mut holder = UnixStream::connect(&vm.qmp).unwrap();
    holder
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut greeting = String::new();
    BufReader::new(holder.try_clone().unwrap())
        .read_line(&mut greeting)
        .unwrap();
    assert!(greeting.contains("QMP"), "{greeting}");
    holder
        .write_all(b"{\"execute\": \"qmp_capabilities\"}\n")
        .unwrap();
    // No [qmp.gpus] entry: the GPUs are the fact that stays missing.
    let daemon = daemon(&[&vm.qmp], &[]);
    let domain = vm.name.as_str();
    let socket = vm.qmp.display().to_string();
    let line = wait_for(
        Duration::from_secs(15),
        "the held socket's problem line",
        || {
            let s = status(&daemon);
            let start = s.find(&format!("QMP socket {socket}: no answer to the greeting"))?;
            Some(s[start..].split("\",").next()?.to_string())
        },
    );
    assert!(
        line.contains("another client may hold the socket"),
        "{line}"
    );
    assert!(
        line.contains(&format!("VM {domain} (QEMU pid {})", vm.pid())),
        "{line}"
    );
    assert!(line.contains("vCPU threads by their names"), "{line}");
    assert!(line.contains("missing: GPUs"), "{line}");
    // Measured all the same: the thread QMP would have named, found by its name.
    let m = wait_for(Duration::from_secs(10), "run time of the held VM", || {
        let m = daemon.metrics();
        (run_total(&m, domain) > 0.0).then_some(m)
    });
    let labels = [("domain", domain), ("vmm", "qemu"), ("gpus", "")];
    assert_eq!(
        metric_value(&m, "pinsight_domain_info", &labels),
        Some(1.0),
        "{m}"
    );
    let status = status(&daemon);
    assert!(
        status.contains(&format!("\"tid\":{}", vm.vcpu_tid)),
        "{status}"
    );
    drop(holder);
}
