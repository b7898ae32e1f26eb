//! Least privilege, as libvirt itself sees the daemon: in observe mode every connection
//! pinsight holds is read-only (libvirt refuses it every call that changes something); only
//! enforce mode opens a read-write one.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{require_host, wait_for};

/// `readonly` of every libvirtd client whose process is `pid`, from `virt-admin client-info`.
fn client_access(pid: u32) -> Vec<bool> {
    let list = std::process::Command::new("virt-admin")
        .args(["srv-clients-list", "libvirtd"])
        .output()
        .expect("virt-admin (libvirt-clients, installed by scripts/setup.sh)");
    let list = String::from_utf8_lossy(&list.stdout);
    let ids = list
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok());
    let mut access = Vec::new();
    for id in ids {
        let info = std::process::Command::new("virt-admin")
            .args(["client-info", "libvirtd", &id.to_string()])
            .output()
            .expect("virt-admin client-info");
        let info = String::from_utf8_lossy(&info.stdout);
        let field = |name: &str| {
            info.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        };
        if field("unix_process_id") == Some(pid.to_string()) {
            access.push(field("readonly").as_deref() == Some("yes"));
        }
    }
    access
}

#[test]
fn observe_mode_holds_only_read_only_libvirt_connections_and_enforce_a_read_write_one() {
    require_host();
    let observe = Daemon::start(&fixture("two-socket-gpu"), "tick_seconds = 0.25\n", &[]);
    let seen = wait_for(
        Duration::from_secs(20),
        "the observe daemon's libvirt clients",
        || {
            let access = client_access(observe.pid());
            (access.len() >= 2).then_some(access)
        },
    );
    assert!(
        seen.iter().all(|read_only| *read_only),
        "observe mode holds a read-write libvirt connection: {seen:?} (true = read-only)"
    );
    drop(observe);

    let enforce = Daemon::start(
        &fixture("two-socket-gpu"),
        "tick_seconds = 0.25\n[policy]\nmode = \"enforce\"\nopt_in = true\n",
        &[],
    );
    let seen = wait_for(
        Duration::from_secs(20),
        "the enforce daemon's libvirt clients",
        || {
            let access = client_access(enforce.pid());
            (access.len() >= 2).then_some(access)
        },
    );
    assert!(
        seen.iter().any(|read_only| !*read_only),
        "enforce mode has no read-write connection to act with: {seen:?}"
    );
}
