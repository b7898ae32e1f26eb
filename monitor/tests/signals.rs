//! Signals on the real daemon: SIGHUP reloads the config file (what can change live does,
//! what cannot is named, a bad file is refused and the running config kept), and SIGTERM
//! stops it within 5 s even while libvirtd hangs.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::libvirtd::Stopped;
use common::{http_get, require_host, wait_for};

/// The daemon's policy mode, from /status.json.
fn mode(daemon: &Daemon) -> String {
    let json = http_get(&daemon.addr, "/status.json").expect("GET /status.json");
    let view: serde_json::Value = serde_json::from_str(&json).expect("status.json is JSON");
    view["mode"].as_str().expect("a mode").to_string()
}

#[test]
fn sighup_reloads_what_can_change_names_what_cannot_and_refuses_a_bad_file() {
    require_host();
    let daemon = Daemon::start(&fixture("two-socket-gpu"), "tick_seconds = 0.25\n", &[]);
    assert_eq!(mode(&daemon), "observe");
    let original = std::fs::read_to_string(&daemon.config).expect("the daemon's config");

    // Live: the policy mode. Needs a restart: where libvirt's pid files are.
    let changed =
        format!("qemu_run_dir = \"/nonexistent/qemu\"\n{original}[policy]\nmode = \"recommend\"\n");
    std::fs::write(&daemon.config, changed).expect("rewrite the config");
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the reloaded mode", || {
        (mode(&daemon) == "recommend").then_some(())
    });
    let log = daemon.log_text();
    assert!(
        log.contains("qemu_run_dir changed but needs a restart"),
        "the restart-only key is not named:\n{log}"
    );

    // A bad file is refused naming key, value and range; the daemon keeps running as it was.
    let bad = original.replace("tick_seconds = 0.25", "tick_seconds = 1e19");
    assert_ne!(bad, original);
    std::fs::write(&daemon.config, bad).expect("rewrite the config");
    daemon.signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        daemon
            .log_text()
            .contains("must be 0.05 to 60 seconds; keeping the running configuration")
            .then_some(())
    });
    assert_eq!(mode(&daemon), "recommend");
    assert!(daemon.metrics().contains("pinsight_build_info"));
}

#[test]
fn sigterm_stops_the_daemon_within_5_s_while_libvirtd_hangs() {
    require_host();
    let mut daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\nrescan_seconds = 0.25\n",
        &[],
    );
    let stopped = Stopped::stop();
    // Long enough for the engine's next rescan to be waiting inside libvirt.
    std::thread::sleep(Duration::from_secs(2));
    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(5));
    let took = asked.elapsed();
    drop(stopped);
    let status = status.unwrap_or_else(|| {
        panic!(
            "the daemon did not stop within 5 s of SIGTERM while libvirtd was stopped:\n{}",
            daemon.log_text()
        )
    });
    assert!(status.success(), "exit {status}:\n{}", daemon.log_text());
    eprintln!("stopped {took:?} after SIGTERM with libvirtd hung");
    // libvirtd answers again for the tests that follow.
    wait_for(Duration::from_secs(10), "libvirtd to answer again", || {
        common::virsh(&["version"]).ok()
    });
}

#[test]
fn an_engine_that_panics_ends_the_process_non_zero_within_2_s_saying_why() {
    require_host();
    let mut daemon = Daemon::start_with_env(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\n",
        &[],
        &[("PINSIGHT_TEST_PANIC_AT_TICK", "8")],
    );
    // Tick 8 is about 1.75 s after the first; the process must be gone 2 s after that.
    let status = daemon
        .wait_exit(Duration::from_secs(4))
        .unwrap_or_else(|| panic!("the daemon outlived its engine:\n{}", daemon.log_text()));
    assert!(!status.success(), "exit {status}");
    let log = daemon.log_text();
    assert!(
        log.contains("the engine thread ended (it panicked: PINSIGHT_TEST_PANIC_AT_TICK=8)"),
        "{log}"
    );
}
