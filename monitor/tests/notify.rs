//! systemd's notify protocol on the real daemon, with the test as the service manager: a
//! datagram socket in NOTIFY_SOCKET gets READY=1 and a STATUS= line, and WATCHDOG=1 keeps
//! coming only while the engine really ticks (also while libvirtd hangs: the engine does not
//! wait for it).

mod common;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::libvirtd::Stopped;
use common::require_host;

/// Every datagram that arrives within `window`.
fn receive(socket: &UnixDatagram, window: Duration) -> Vec<String> {
    let deadline = Instant::now() + window;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("set a read timeout");
        match socket.recv(&mut buf) {
            Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    got
}

fn pings(messages: &[String]) -> usize {
    messages.iter().filter(|m| m.contains("WATCHDOG=1")).count()
}

#[test]
fn ready_status_and_a_watchdog_that_pings_only_while_the_engine_ticks() {
    require_host();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
    let path = path.to_str().expect("a UTF-8 temp path").to_string();
    // A 1 s watchdog: the daemon pings every quarter of it while it ticks.
    let daemon = Daemon::start_with_env(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.1\nrescan_seconds = 0.2\n",
        &[],
        &[("NOTIFY_SOCKET", &path), ("WATCHDOG_USEC", "1000000")],
    );
    let first = receive(&socket, Duration::from_secs(3));
    assert!(
        first.iter().any(|m| m.contains("READY=1")),
        "no READY=1 in {first:?}"
    );
    let status = first
        .iter()
        .flat_map(|m| m.lines())
        .find(|l| l.starts_with("STATUS=") && l.contains("libvirt up"))
        .unwrap_or_else(|| panic!("no STATUS= line with the host's summary in {first:?}"));
    assert!(status.contains("sched_switch attached"), "{status}");
    assert!(pings(&first) >= 4, "too few WATCHDOG=1 in 3 s: {first:?}");

    // libvirtd stopped: the engine does not wait for it, so it keeps ticking and pinging.
    let stopped = Stopped::stop();
    let hung = receive(&socket, Duration::from_secs(2));
    drop(stopped);
    assert!(
        pings(&hung) >= 4,
        "the engine stopped pinging while libvirtd hung: {hung:?}"
    );
    drop(daemon);

    // An engine that stops ticking (the test hook wedges it at tick 20, 2 s in) stops the
    // pings, so systemd restarts the daemon after WatchdogSec.
    let daemon = Daemon::start_with_env(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.1\nrescan_seconds = 0.2\n",
        &[],
        &[
            ("NOTIFY_SOCKET", &path),
            ("WATCHDOG_USEC", "1000000"),
            ("PINSIGHT_TEST_WEDGE_AT_TICK", "20"),
        ],
    );
    let before = receive(&socket, Duration::from_secs(4));
    let wedged = receive(&socket, Duration::from_secs(2));
    assert!(pings(&before) >= 1, "no pings before the wedge: {before:?}");
    assert_eq!(
        pings(&wedged),
        0,
        "pings while the engine was wedged: {wedged:?}\n{}",
        daemon.log_text()
    );
    assert!(daemon.log_text().contains("the engine stops ticking"));
    assert!(daemon.metrics().contains("pinsight_build_info"));
}
