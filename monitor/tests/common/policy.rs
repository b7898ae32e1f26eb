//! What the repin tests share: the operator element that opts a test VM in or out, and
//! reading the policy's results from a daemon.

use std::time::Duration;

use super::daemon::Daemon;
use super::{metric_value, wait_for, TestVm};

/// The fixture GPU the test VMs declare (on node 1 of the two-socket fixture).
pub const GPU: &str = "0000:3b:00.0";

/// The operator element with the fixture GPU and a repin policy.
pub fn operator(repin: &str) -> String {
    format!(
        "<pinsight:domain xmlns:pinsight=\"urn:pinsight:domain:1\">\
         <pinsight:gpu address=\"{GPU}\"/><pinsight:policy repin=\"{repin}\"/></pinsight:domain>"
    )
}

/// pinsight_repins_total{domain, result}, if the daemon exports it.
pub fn repins(daemon: &Daemon, domain: &str, result: &str) -> Option<f64> {
    metric_value(
        &daemon.metrics(),
        "pinsight_repins_total",
        &[("domain", domain), ("result", result)],
    )
}

/// Waits until the daemon has evaluated `vm` (it shows in pinsight_domain_info with its GPU).
pub fn wait_seen(daemon: &Daemon, vm: &TestVm) {
    wait_for(
        Duration::from_secs(20),
        &format!("{} in /metrics", vm.name),
        || {
            metric_value(
                &daemon.metrics(),
                "pinsight_domain_info",
                &[("domain", &vm.name), ("gpu_nodes", "1")],
            )
        },
    );
}
