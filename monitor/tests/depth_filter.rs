//! The depth filter in front of the thread table, on the real kernel: sched_switch looks a
//! thread up only when its CPU cgroup depth (`se.depth`) has its bit in the filter word. A
//! thread of this process is tracked in a cgroup of the v1 `cpu` hierarchy made for the test,
//! moved deeper, and its whole process moved with an untracked leader; through all of it the
//! probes' run time must equal the kernel's schedstat, and the word must follow: closed to the
//! depth read from /proc when tracked, the new depth let through by the move tracepoint itself,
//! and a thread that ran unseen found by the daemon's check. A missing precondition fails with
//! the reason (`common::require_host`, `CpuCgroups::make`).

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::thread::{burn, gettid, schedstat_ns, CpuCgroups};
use common::{assert_agrees_with_schedstat, two_socket_topo};
use monitor_common::sched_switch::{depth_bit, ALL_DEPTHS};
use pinsight::probes::{KvmExitSource, ProbeOptions, Probes};

fn load() -> Probes {
    let probes = Probes::load(ProbeOptions {
        max_threads: 8,
        max_other_threads: 8,
        kvm_exit_source: KvmExitSource::Auto,
        cpu_topo: two_socket_topo(),
    })
    .expect("probes load and attach");
    let state = probes.depth_filter().expect("filter word readable");
    let (word, may_close) = (state.word, state.may_close);
    assert!(
        may_close,
        "the filter can close here (se.depth in BTF, cgroup_attach_task attached): {:?}",
        probes.status()
    );
    assert_eq!(word, ALL_DEPTHS, "open until the first read");
    probes
}

/// A thread of this process that burns CPU when told to, and otherwise sleeps.
struct Worker {
    tid: u32,
    go: Option<mpsc::Sender<u64>>,
    done: mpsc::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn spawn() -> Worker {
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go, go_rx) = mpsc::channel::<u64>();
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            let tid = gettid();
            tid_tx.send(tid).expect("test waits for the tid");
            for ns in go_rx {
                burn(tid, ns);
                done_tx.send(()).expect("test waits for the burn");
            }
        });
        Worker {
            tid: tid_rx.recv().expect("worker sends its tid"),
            go: Some(go),
            done,
            thread: Some(thread),
        }
    }

    /// Burns `ms` of its own CPU time, then is off CPU again (asleep on its channel).
    fn burn_ms(&self, ms: u64) {
        let go = self.go.as_ref().expect("worker running");
        go.send(ms * 1_000_000).expect("worker alive");
        self.done.recv().expect("worker finished the burn");
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.go.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The worker's run time by the probes since it was tracked, in seconds.
fn counted_s(probes: &Probes, tid: u32) -> f64 {
    let counters = probes.read().expect("probe maps readable");
    counters[&tid].run_ns_by_cpu.iter().sum::<u64>() as f64 / 1e9
}

fn word(probes: &Probes) -> u64 {
    probes.depth_filter().expect("filter word readable").word
}

/// A worker tracked in the cgroup at depth 2 of three made for the test, the filter closed to
/// depth 2 by the first read (what both tests start from).
struct Tracked {
    worker: Worker,
    probes: Probes,
    cgroups: CpuCgroups,
    /// The worker's run-time clock when it was tracked.
    at_track: u64,
}

impl Tracked {
    fn at_depth_2() -> Tracked {
        common::require_host();
        let cgroups = CpuCgroups::make(3);
        let mut probes = load();
        let worker = Worker::spawn();
        cgroups.move_thread(worker.tid, 2);
        let at_track = schedstat_ns(worker.tid);
        probes.track(worker.tid).expect("track the worker");
        probes.read().expect("probe maps readable");
        assert_eq!(
            word(&probes),
            depth_bit(2),
            "closed to the depth read from /proc"
        );
        Tracked {
            worker,
            probes,
            cgroups,
            at_track,
        }
    }
}

#[test]
fn the_filter_closes_to_the_tracked_depth_and_a_move_lets_the_new_depth_through() {
    let Tracked {
        worker,
        probes,
        cgroups,
        at_track,
    } = Tracked::at_depth_2();

    worker.burn_ms(30);
    let kernel = (schedstat_ns(worker.tid) - at_track) as f64 / 1e9;
    assert_agrees_with_schedstat("at depth 2", counted_s(&probes, worker.tid), kernel);
    assert!(kernel >= 0.03, "the worker burned 30 ms: {kernel} s");

    // Moved while asleep: nothing but the move tracepoint can let depth 3 through before the
    // daemon's next read, and it fires after the scheduler has moved the task.
    cgroups.move_thread(worker.tid, 3);
    assert_eq!(
        word(&probes),
        depth_bit(2) | depth_bit(3),
        "the move let the new depth through at once"
    );
    worker.burn_ms(30);
    let kernel = (schedstat_ns(worker.tid) - at_track) as f64 / 1e9;
    assert_agrees_with_schedstat(
        "after the move to depth 3",
        counted_s(&probes, worker.tid),
        kernel,
    );
    assert!(kernel >= 0.06, "the worker burned 60 ms: {kernel} s");
    assert_eq!(
        word(&probes),
        depth_bit(2) | depth_bit(3),
        "the word keeps its bits"
    );
}

#[test]
fn a_thread_moved_with_its_untracked_leader_is_found_by_the_check() {
    let Tracked {
        worker,
        probes,
        cgroups,
        at_track,
    } = Tracked::at_depth_2();

    // The whole process moves to depth 3 before the worker ever ran: the tracepoint names its
    // leader (this test's main thread), which is not tracked, so the worker's new depth is not
    // let through by it, and the depth read from /proc (2) is now wrong.
    cgroups.move_process(3);
    assert_eq!(
        word(&probes),
        depth_bit(2),
        "the move of an untracked leader changes nothing"
    );

    // The worker now switches unseen (with the idle task at depth 0, this process's threads at
    // depth 3: neither side's depth is let through). The daemon's check (every 60 s, the
    // first at the first read) finds it, opens the filter until the probes see it, and they
    // record its real depth.
    let give_up = Instant::now() + Duration::from_secs(90);
    let mut opened = false;
    loop {
        worker.burn_ms(20);
        probes.read().expect("probe maps readable");
        let now = word(&probes);
        opened |= now == ALL_DEPTHS;
        if now != ALL_DEPTHS && now & depth_bit(3) != 0 {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "depth 3 not let through within 90 s: {now:#x}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        opened,
        "the check opened the filter before it closed to depth 3"
    );
    let state = probes.depth_filter().expect("filter readable");
    assert_eq!(state.threads_ran_unseen, 1, "{state:?}");
    worker.burn_ms(30);
    let kernel = (schedstat_ns(worker.tid) - at_track) as f64 / 1e9;
    assert_agrees_with_schedstat(
        "across the unseen stretch",
        counted_s(&probes, worker.tid),
        kernel,
    );
}
