//! End to end on the real host: the real daemon and its real probes count every move of a real
//! busy vCPU thread by scope, the smallest topology level the two CPUs share. The host has two
//! CPUs; four fixture trees put them one level apart each (moves-smt: SMT siblings of one
//! core; moves-core: two cores of a node; moves-node: two nodes of a socket; two-socket-gpu:
//! two sockets), and `virsh vcpupin --live` moves the vCPU between them a known number of
//! times under each.
//!
//! Pinned to one CPU, the kernel cannot move the thread on its own, and every move is between
//! CPU 0 and CPU 1: so under each fixture the moves all land in that fixture's scope, and the
//! other scopes must not grow at all.

mod common;

use std::time::Duration;

use common::daemon::{fixture, Daemon};
use common::{metric_value, require_host, TestVm, VmOptions};

/// Moves per fixture: 0 -> 1 -> 0 -> 1 -> 0.
const MOVES: u32 = 4;
const SCOPES: [&str; 5] = ["smt", "core", "node", "socket", "unknown"];

/// The CPU the thread last ran on (field 39 of /proc/PID/task/TID/stat).
fn last_cpu(pid: u32, tid: u32) -> u32 {
    let path = format!("/proc/{pid}/task/{tid}/stat");
    let stat = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    // "tid (comm) S ...": the comm ("CPU 0/KVM") has spaces, so count fields after its ')';
    // the state is field 3, the CPU field 39.
    let (_, rest) = stat
        .rsplit_once(')')
        .expect("stat has a comm in parentheses");
    let cpu = rest.split_whitespace().nth(39 - 3);
    cpu.and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no CPU field in {path}: {stat:?}"))
}

/// vCPU 0's moves per scope (0 for a scope not shown: unknown is only shown once it happened).
fn moves(metrics: &str, domain: &str) -> Vec<f64> {
    SCOPES
        .iter()
        .map(|scope| {
            let labels = [("domain", domain), ("vcpu", "0"), ("scope", scope)];
            metric_value(metrics, "pinsight_vcpu_migrations_total", &labels).unwrap_or(0.0)
        })
        .collect()
}

fn cross_socket(metrics: &str, domain: &str) -> f64 {
    let labels = [("domain", domain), ("vcpu", "0")];
    metric_value(
        metrics,
        "pinsight_vcpu_cross_socket_migrations_total",
        &labels,
    )
    .unwrap_or_else(|| panic!("no cross-socket migrations for {domain} in:\n{metrics}"))
}

/// Under `fixture`'s daemon, MOVES repins must show as MOVES more moves of `scope` and none
/// of any other.
fn moves_are_counted_in_their_scope(vm: &TestVm, fixture_name: &str, scope: &str) {
    let domain = vm.name.as_str();
    let tid = vm.vcpu_tid(0);
    let daemon = Daemon::start(
        &fixture(fixture_name),
        "tick_seconds = 0.25\nrescan_seconds = 0.5\n",
        // Daemon::settled tells fresh publishes by the probe run counts.
        &["--bpf-stats"],
    );
    common::wait_for(
        Duration::from_secs(20),
        &format!("{domain}'s vCPU 0 in pinsight_vcpu_migrations_total ({fixture_name})"),
        || {
            let labels = [("domain", domain), ("vcpu", "0"), ("scope", scope)];
            metric_value(&daemon.metrics(), "pinsight_vcpu_migrations_total", &labels)
        },
    );
    let sum = |m: &str| moves(m, domain).iter().sum::<f64>() + cross_socket(m, domain);
    let (_, m0) = daemon.settled("the moves of the pinned vCPU", sum);
    let (before, cross_before) = (moves(&m0, domain), cross_socket(&m0, domain));

    for i in 1..=MOVES {
        let cpu = i % 2;
        vm.pin_vcpu(0, &cpu.to_string());
        // The busy thread is always runnable, so it moves at once; waiting until it has run
        // there makes each pin one move, not two pins that cancel before the thread runs.
        common::wait_for(
            Duration::from_secs(5),
            &format!("vCPU 0 of {domain} to run on CPU {cpu}"),
            || (last_cpu(vm.pid, tid) == cpu).then_some(()),
        );
    }
    let index = SCOPES
        .iter()
        .position(|s| *s == scope)
        .expect("a known scope");
    common::wait_for(
        Duration::from_secs(10),
        &format!("{MOVES} {scope} moves counted under {fixture_name}"),
        || {
            (moves(&daemon.metrics(), domain)[index] >= before[index] + f64::from(MOVES))
                .then_some(())
        },
    );
    let (_, m1) = daemon.settled("the moves of the pinned vCPU", sum);
    let after = moves(&m1, domain);
    let probe = [("probe", "sched_migrate_task")];
    let cost = |name| metric_value(&m1, name, &probe).unwrap_or(0.0);
    eprintln!(
        "{fixture_name}: moves by scope {SCOPES:?}: {before:?} -> {after:?}; sched_migrate_task \
         {:.0} ns a run over {} runs (every move on the host)",
        1e9 * cost("pinsight_probe_run_seconds_total") / cost("pinsight_probe_runs_total"),
        cost("pinsight_probe_runs_total")
    );
    for (i, name) in SCOPES.iter().enumerate() {
        let grew = after[i] - before[i];
        if i == index {
            assert!(
                grew >= f64::from(MOVES),
                "{fixture_name}: {MOVES} repins between CPU 0 and 1 grew {name} moves by {grew}"
            );
        } else {
            assert_eq!(
                grew, 0.0,
                "{fixture_name}: moves between CPU 0 and 1 ({scope}) counted as {name}"
            );
        }
    }
    // The kept cross-socket family is the socket scope, and only that.
    let cross_grew = cross_socket(&m1, domain) - cross_before;
    let socket = SCOPES
        .iter()
        .position(|s| *s == "socket")
        .expect("socket scope");
    assert_eq!(
        cross_grew,
        after[socket] - before[socket],
        "{fixture_name}: cross-socket migrations vs socket moves"
    );
}

#[test]
fn every_move_is_counted_by_the_smallest_level_the_two_cpus_share() {
    require_host();
    let vm = TestVm::start(VmOptions::busy("moves"));
    for (fixture_name, scope) in [
        ("moves-smt", "smt"),
        ("moves-core", "core"),
        ("moves-node", "node"),
        ("two-socket-gpu", "socket"),
    ] {
        // Start each daemon with the thread settled on CPU 0.
        vm.pin_vcpu(0, "0");
        moves_are_counted_in_their_scope(&vm, fixture_name, scope);
    }
}
