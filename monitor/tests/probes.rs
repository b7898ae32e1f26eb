//! The real probes on the real kernel: a thread of this test process is tracked, burns CPU
//! while hopping between CPUs that a made-up topology puts on two sockets, and the probes'
//! counters must match the kernel's own schedstat for that thread.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pinsight::probes::{KvmExitSource, ProbeOptions, Probes};

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

fn schedstat_ns(tid: u32) -> u64 {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).expect("schedstat readable");
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn pin_self(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity(0) applies to the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        assert_eq!(
            libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set),
            0
        );
    }
}

fn require_root() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test loads eBPF and must run as root (see README)"
    );
    assert!(
        std::path::Path::new("/sys/kernel/btf/vmlinux").exists(),
        "kernel BTF (/sys/kernel/btf/vmlinux) is missing: the probes need it"
    );
}

#[test]
fn sched_switch_accounts_a_tracked_thread_per_cpu_and_counts_socket_moves() {
    require_root();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus >= 2,
        "needs 2 CPUs to move a thread between sockets, have {cpus}"
    );
    // CPU 0 on socket 0, CPU 1 on socket 1: the same shape as the two-socket fixture.
    let options = ProbeOptions {
        max_threads: 64,
        max_exit_keys: 256,
        kvm_exit_source: KvmExitSource::Auto,
        cpu_sockets: BTreeMap::from([(0, 0), (1, 1)]),
    };
    let mut probes = Probes::load(options).expect("probes load and attach");
    assert!(probes.status()["sched_switch"].attached);

    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_worker = stop.clone();
    let worker = std::thread::spawn(move || {
        tid_tx.send(gettid()).unwrap();
        go_rx.recv().unwrap();
        let before = schedstat_ns(gettid());
        // Four hops: 0 -> 1 -> 0 -> 1, burning ~150 ms on each CPU.
        for hop in 0..4 {
            pin_self(hop % 2);
            let until = std::time::Instant::now() + Duration::from_millis(150);
            while std::time::Instant::now() < until {
                std::hint::spin_loop();
            }
            // Sleeping forces a switch out, so the stint lands in RUN_NS.
            std::thread::sleep(Duration::from_millis(5));
        }
        let after = schedstat_ns(gettid());
        while !stop_worker.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        after - before
    });
    let tid = tid_rx.recv().unwrap();
    probes.track(tid).expect("track worker thread");
    go_tx.send(()).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    let counters = probes.read().unwrap()[&tid].clone();
    stop.store(true, Ordering::Relaxed);
    let kernel_ns = worker.join().unwrap();

    let ours: u64 = counters.run_ns_by_cpu.iter().sum();
    // Both sides measure the same stints with the same clock; they differ by the bits of run
    // time outside the measured window (thread wake-up before `before`, the sleep loop after
    // `after`), a few ms at most.
    let diff = ours.abs_diff(kernel_ns) as f64 / kernel_ns as f64;
    assert!(
        diff < 0.10,
        "probe {ours} ns vs schedstat {kernel_ns} ns ({:.1}% apart)",
        diff * 100.0
    );
    for cpu in 0..2 {
        let on_cpu = counters.run_ns_by_cpu[cpu];
        assert!(
            on_cpu > 200_000_000,
            "CPU {cpu} got only {on_cpu} ns of ~300 ms"
        );
    }
    assert!(
        counters.cross_socket_migrations >= 3,
        "expected >= 3 socket moves, got {}",
        counters.cross_socket_migrations
    );

    let last = probes.untrack(tid).unwrap();
    assert!(last.run_ns_by_cpu.iter().sum::<u64>() >= ours);
    assert!(probes.tracked().is_empty());
}
