//! Tests of the integration-test harness itself (tests/common): real KVM VMs under libvirt are
//! started, carry metadata, get pinned, keep their vCPU busy, and are gone after their guard
//! drops, also when the test panics. Needs root and scripts/setup.sh; fails (never skips) if not.

mod common;

use common::{
    free_port, http_get, metric_sum, metric_value, require_host, wait_for, TestVm, VmOptions,
};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const OPERATOR_NS: &str = "urn:pinsight:domain:1";
const STATE_NS: &str = "urn:pinsight:state:1";

/// Share of wall time vCPU 0 ran during `window`, measured from its schedstat.
fn busy_share(vm: &TestVm, window: Duration) -> f64 {
    let (run0, t0) = (vm.schedstat_run_ns(0), Instant::now());
    std::thread::sleep(window);
    let (run1, wall) = (vm.schedstat_run_ns(0), t0.elapsed());
    (run1 - run0) as f64 / wall.as_nanos() as f64
}

fn assert_gone(name: &str, pid: u32) {
    assert!(
        !common::domain_exists(name),
        "domain {name} still exists after drop"
    );
    let proc_dir = format!("/proc/{pid}");
    wait_for(
        Duration::from_secs(10),
        &format!("QEMU {pid} of {name} to exit"),
        || (!Path::new(&proc_dir).exists()).then_some(()),
    );
}

#[test]
fn busy_vm_carries_metadata_is_pinned_runs_and_is_destroyed() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(format!(
            r#"<pinsight:domain xmlns:pinsight="{OPERATOR_NS}"><pinsight:gpu address="0000:3b:00.0"/></pinsight:domain>"#
        )),
        ..VmOptions::busy("harness")
    });
    let (name, pid) = (vm.name.clone(), vm.pid);
    assert!(name.starts_with(&format!("pinsight-test-harness-{}-", std::process::id())));
    assert_eq!(vm.vcpu_tids.len(), 1, "busy guest has one vCPU");
    let comm = std::fs::read_to_string(format!("/proc/{pid}/task/{}/comm", vm.vcpu_tids[0]))
        .expect("vCPU thread comm");
    assert_eq!(comm.trim(), "CPU 0/KVM");

    // The operator element is in the live XML, in its namespace, with its GPU.
    let xml = vm.dumpxml();
    assert!(
        xml.contains(&format!("<uuid>{}</uuid>", vm.uuid)),
        "uuid not in XML:\n{xml}"
    );
    let operator = vm.metadata(OPERATOR_NS).expect("operator metadata element");
    assert!(operator.contains("gpu") && operator.contains(r#"address="0000:3b:00.0""#));
    assert!(
        xml.contains(OPERATOR_NS) && xml.contains("0000:3b:00.0"),
        "XML:\n{xml}"
    );

    // set_metadata writes a second namespace live without touching the first.
    assert_eq!(vm.metadata(STATE_NS), None);
    vm.set_metadata(
        STATE_NS,
        "pinsight-state",
        "<state><last-action>none</last-action></state>",
    );
    let state = vm
        .metadata(STATE_NS)
        .expect("state metadata element after set");
    assert!(
        state.contains("<last-action>none</last-action>"),
        "state element: {state}"
    );
    assert!(
        vm.metadata(OPERATOR_NS).is_some(),
        "operator element lost after set"
    );

    // Pinned to each CPU in turn, the spin guest keeps its vCPU running most of the time.
    for cpu in ["0", "1"] {
        vm.pin_vcpu(0, cpu);
        assert_eq!(vm.allowed_cpus(0), cpu);
        let share = busy_share(&vm, Duration::from_secs(2));
        eprintln!(
            "vCPU 0 of {name} pinned to CPU {cpu}: ran {:.1}% of wall time",
            share * 100.0
        );
        assert!(
            share > 0.5,
            "vCPU 0 on CPU {cpu} ran only {:.1}%",
            share * 100.0
        );
    }

    drop(vm);
    assert_gone(&name, pid);
}

#[test]
fn vm_is_destroyed_when_the_test_panics() {
    require_host();
    let started: Mutex<Option<(String, u32)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let vm = TestVm::start(VmOptions::idle("harness-panic"));
        assert_eq!(vm.vcpu_tids.len(), 2, "idle guest has two vCPUs");
        *started.lock().unwrap() = Some((vm.name.clone(), vm.pid));
        assert!(common::domain_exists(&vm.name));
        panic!("deliberate panic while {} runs", vm.name);
    }));
    assert!(result.is_err(), "the closure should have panicked");
    let (name, pid) = started
        .lock()
        .unwrap()
        .take()
        .expect("VM was started before the panic");
    assert_gone(&name, pid);
}

#[test]
fn vcpu_cpuset_applies_from_the_start() {
    require_host();
    let vm = TestVm::start(VmOptions {
        vcpu_cpuset: Some("1".to_string()),
        ..VmOptions::idle("harness-cpuset")
    });
    for vcpu in 0..2 {
        assert_eq!(vm.allowed_cpus(vcpu), "1");
    }
}

#[test]
fn prometheus_exposition_is_parsed() {
    let text = r#"# HELP pinsight_vcpu_run_seconds_total Run time.
# TYPE pinsight_vcpu_run_seconds_total counter
pinsight_vcpu_run_seconds_total{domain="a",vcpu="0",locality="local"} 1.5
pinsight_vcpu_run_seconds_total{domain="a",vcpu="1",locality="remote"} 2.25
pinsight_vcpu_run_seconds_total{domain="b, \"x\"",vcpu="0",locality="local"} 4e0 1700000000
pinsight_vcpu_run_seconds_total{domain="C:\\d}\nx",vcpu="0",locality="none"} 0.5
# TYPE pinsight_libvirt_up gauge
pinsight_libvirt_up 1
# TYPE pinsight_ratio gauge
pinsight_ratio{q="+Inf"} +Inf
"#;
    let run = "pinsight_vcpu_run_seconds_total";
    assert_eq!(
        metric_value(text, run, &[("domain", "a"), ("vcpu", "1")]),
        Some(2.25)
    );
    assert_eq!(
        metric_value(text, run, &[("domain", "b, \"x\"")]),
        Some(4.0)
    );
    assert_eq!(
        metric_value(text, run, &[("domain", "C:\\d}\nx")]),
        Some(0.5),
        "escapes and a brace inside a label value"
    );
    assert_eq!(metric_value(text, run, &[("domain", "c")]), None);
    assert_eq!(metric_value(text, "pinsight_libvirt_up", &[]), Some(1.0));
    assert_eq!(
        metric_value(text, "pinsight_ratio", &[]),
        Some(f64::INFINITY)
    );
    assert_eq!(metric_sum(text, run, &[("domain", "a")]), 3.75);
    assert_eq!(metric_sum(text, run, &[("locality", "local")]), 5.5);
    assert_eq!(metric_sum(text, run, &[("locality", "same_socket")]), 0.0);
    let ambiguous = std::panic::catch_unwind(|| metric_value(text, run, &[("domain", "a")]));
    assert!(ambiguous.is_err(), "an ambiguous label subset must panic");
}

/// Serves `responses` (raw HTTP) one per connection on a free port; returns "127.0.0.1:PORT".
fn serve(responses: Vec<&'static str>) -> String {
    // Binding port 0 directly (not free_port) leaves no window for another process to take it.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local_addr").to_string();
    std::thread::spawn(move || {
        for response in responses {
            let (mut conn, _) = listener.accept().expect("accept");
            // Read the whole request: closing with unread bytes would reset the connection.
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let n = conn.read(&mut buf).expect("read request");
                assert!(n > 0, "client closed before the end of its request");
                request.extend_from_slice(&buf[..n]);
            }
            assert!(
                request.starts_with(b"GET /metrics HTTP/1.1\r\n"),
                "{request:?}"
            );
            conn.write_all(response.as_bytes()).expect("write response");
        }
    });
    addr
}

#[test]
fn free_port_can_be_bound() {
    let port = free_port();
    assert_ne!(port, 0);
    TcpListener::bind(("127.0.0.1", port)).expect("the port free_port returned binds");
}

#[test]
fn http_get_returns_body_and_rejects_non_200() {
    let addr = serve(vec![
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown",
    ]);
    assert_eq!(http_get(&addr, "/metrics").as_deref(), Ok("hello"));
    assert_eq!(http_get(&addr, "/metrics").as_deref(), Ok("abcde"));
    let err = http_get(&addr, "/metrics").expect_err("503 is an error");
    assert!(err.contains("503") && err.contains("down"), "error: {err}");
}
