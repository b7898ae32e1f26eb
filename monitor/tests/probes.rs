//! The real probes on the real kernel: a thread of this test process is tracked, burns CPU
//! while hopping between CPUs that a made-up topology puts on two sockets, and the probes'
//! counters must match the kernel's own schedstat for that thread. Also the host-dependent
//! checks of the probes' readers (kernel BTF, tracefs formats, the KVM module) and the two
//! load stages. A missing precondition fails with the reason (`common::require_host`).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::thread::{gettid, pin_self, schedstat_ns};
use monitor_common::programs;
use pinsight::probes::btf::KernelBtf;
use pinsight::probes::{
    kvm_vendor_module, tracefs, KvmExitSource, ProbeError, ProbeOptions, Probes,
};

fn options(kvm_exit_source: KvmExitSource) -> ProbeOptions {
    // CPU 0 on socket 0, CPU 1 on socket 1: the same shape as the two-socket fixture.
    ProbeOptions {
        max_threads: 64,
        max_other_threads: 64,
        kvm_exit_source,
        cpu_topo: common::two_socket_topo(),
    }
}

#[test]
fn sched_switch_accounts_a_tracked_thread_per_cpu_and_counts_socket_moves() {
    common::require_host();
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(
        cpus >= 2,
        "needs 2 CPUs to move a thread between sockets, have {cpus}"
    );
    let mut probes = Probes::load(options(KvmExitSource::Auto)).expect("probes load and attach");
    assert!(probes.status()["sched_switch"].attached);

    let (tid_tx, tid_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<[u64; 2]>();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_worker = stop.clone();
    let worker = std::thread::spawn(move || {
        let tid = gettid();
        tid_tx.send(tid).unwrap();
        go_rx.recv().unwrap();
        // Four hops: 0 -> 1 -> 0 -> 1, each burning 150 ms of the thread's own CPU time (not
        // wall time: another VM or test on this 2-CPU host may take a share of the CPU).
        // While pinned, all of the thread's run time is on that CPU, so schedstat's growth
        // per hop is the kernel's own figure for that CPU.
        let mut kernel_ns_by_cpu = [0u64; 2];
        for hop in 0..4 {
            let cpu = hop % 2;
            pin_self(cpu);
            let start = schedstat_ns(tid);
            let give_up = Instant::now() + Duration::from_secs(5);
            while schedstat_ns(tid) - start < 150_000_000 && Instant::now() < give_up {
                let until = Instant::now() + Duration::from_millis(1);
                while Instant::now() < until {
                    std::hint::spin_loop();
                }
            }
            // Sleeping forces a switch out, so the stint lands in RUN_NS.
            std::thread::sleep(Duration::from_millis(5));
            kernel_ns_by_cpu[cpu] += schedstat_ns(tid) - start;
        }
        done_tx.send(kernel_ns_by_cpu).unwrap();
        while !stop_worker.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let tid = tid_rx.recv().unwrap();
    probes.track(tid).expect("track worker thread");
    go_tx.send(()).unwrap();
    let kernel_ns_by_cpu = done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("worker finished its hops");
    let counters = probes.read().unwrap()[&tid].clone();
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();

    // Both sides measure the same stints with the same clock; they differ by the bits of run
    // time outside the measured hops (the thread's wake-up after `go`, its sleep loop after
    // reporting), well under a millisecond each; 10% + 5 ms leaves room for a loaded host.
    for (cpu, &kernel) in kernel_ns_by_cpu.iter().enumerate() {
        let ours = counters.run_ns_by_cpu[cpu];
        assert!(
            kernel >= 250_000_000,
            "CPU {cpu}: the worker got only {kernel} ns of its 300 ms (a hop gives up after 5 s: host overloaded?)"
        );
        assert!(
            ours.abs_diff(kernel) < kernel / 10 + 5_000_000,
            "CPU {cpu}: probe {ours} ns vs schedstat {kernel} ns"
        );
    }
    let ours: u64 = counters.run_ns_by_cpu.iter().sum();
    assert!(
        counters.moves.socket >= 3,
        "expected >= 3 socket moves, got {:?}",
        counters.moves
    );

    let last = probes.untrack(tid).unwrap();
    assert!(last.run_ns_by_cpu.iter().sum::<u64>() >= ours);
    assert!(probes.tracked().is_empty());
}

/// The batch read of the counter maps (one call per map) gives exactly what a lookup per
/// thread and map gives: threads of both pools, with freed slots between them, each of which
/// ran on both CPUs and then blocks, so nothing changes between the two reads.
#[test]
fn a_thread_that_is_gone_takes_no_slot() {
    common::require_host();
    let mut probes = Probes::load(ProbeOptions {
        max_threads: 1,
        ..options(KvmExitSource::Auto)
    })
    .expect("probes load and attach");
    // A thread that has exited: its id has no /proc entry (ids are handed out in turn, so it
    // is not reused within this test).
    let gone = std::thread::spawn(gettid).join().unwrap();
    for _ in 0..3 {
        let refused = probes.track(gone);
        assert!(
            matches!(refused, Err(ProbeError::ThreadClock { tid, .. }) if tid == gone),
            "tracking the exited thread {gone}: {refused:?}"
        );
    }
    assert!(probes.tracked().is_empty());
    // The one vCPU slot is still free.
    let me = gettid();
    probes.track(me).expect("the only slot is still free");
    assert_eq!(probes.tracked().iter().copied().collect::<Vec<_>>(), [me]);
}

#[test]
fn the_batch_read_equals_the_read_entry_by_entry() {
    common::require_host();
    let mut probes = Probes::load(options(KvmExitSource::Auto)).expect("probes load and attach");
    let (tid_tx, tid_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let mut gos = Vec::new();
    let mut workers = Vec::new();
    for n in 0..24 {
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let (tid_tx, done_tx) = (tid_tx.clone(), done_tx.clone());
        gos.push(go_tx);
        workers.push(std::thread::spawn(move || {
            let tid = gettid();
            tid_tx.send(tid).unwrap();
            go_rx.recv().unwrap();
            // 2 ms of the thread's own CPU time on each CPU (not wall time: on this loaded
            // 2-CPU host the other threads and tests take their share).
            for cpu in [n % 2, (n + 1) % 2] {
                pin_self(cpu);
                let start = schedstat_ns(tid);
                while schedstat_ns(tid) - start < 2_000_000 {
                    std::hint::spin_loop();
                }
            }
            done_tx.send(()).unwrap();
            // Blocks until the test ends: from here its counters stay as they are.
            let _ = go_rx.recv();
        }));
    }
    let tids: Vec<u32> = (0..24).map(|_| tid_rx.recv().unwrap()).collect();
    for (n, &tid) in tids.iter().enumerate() {
        match n % 3 {
            0 => probes.track_other(tid),
            _ => probes.track(tid),
        }
        .expect("track a worker");
    }
    for go in &gos {
        go.send(()).unwrap();
    }
    for _ in 0..24 {
        done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("every worker ran");
    }
    // Holes: freed slots below others still in use.
    for &tid in tids.iter().step_by(5) {
        probes.untrack(tid).unwrap();
    }
    let batch = probes.read().unwrap();
    let each = probes.read_each().unwrap();
    // In chunks too: a slot per call, and several slots per call (as on a host of many CPUs,
    // where a chunk is bounded in bytes).
    let one_by_one = probes.read_chunked(1).unwrap();
    let by_chunks = probes.read_chunked(5 * 1024).unwrap(); // 17 slots a call on 2 CPUs
    assert!(
        probes.reads_in_batches(),
        "this kernel (>= 5.6) refused a batch lookup: see the daemon's log line"
    );
    drop(gos);
    for worker in workers {
        worker.join().unwrap();
    }
    let kept: Vec<u32> = tids
        .iter()
        .copied()
        .filter(|t| !tids.iter().step_by(5).any(|u| u == t))
        .collect();
    assert_eq!(batch.keys().copied().collect::<Vec<_>>(), {
        let mut k = kept.clone();
        k.sort();
        k
    });
    for tid in &kept {
        let ran: u64 = batch[tid].run_ns_by_cpu.iter().sum();
        assert!(
            ran >= 3_000_000,
            "thread {tid}: {ran} ns counted of its 4 ms of CPU time"
        );
    }
    assert_eq!(batch, each);
    assert_eq!(one_by_one, each);
    assert_eq!(by_chunks, each);
}

#[test]
fn prepare_loads_every_program_and_attach_attaches_them() {
    common::require_host();
    let mut probes = Probes::prepare(options(KvmExitSource::Auto)).expect("probes prepare");
    let sched = [
        programs::SCHED_SWITCH,
        programs::SCHED_PROCESS_EXIT,
        programs::SCHED_MIGRATE_TASK,
        programs::CGROUP_ATTACH_TASK,
    ];
    for name in sched {
        let st = &probes.status()[name];
        assert!(
            !st.attached && st.detail.contains("prepared"),
            "{name}: {st:?}"
        );
    }
    assert_eq!(
        probes.exit_source(),
        None,
        "nothing attaches before attach()"
    );
    probes.attach().expect("probes attach");
    for name in sched {
        let st = &probes.status()[name];
        assert!(st.attached, "{name}: {st:?}");
    }
    // Both KVM exit sources are reported, exactly one is attached and it is the one in use.
    let sources = [programs::KVM_EXIT, programs::KVM_USERSPACE_EXIT];
    let attached: Vec<&str> = sources
        .into_iter()
        .filter(|name| probes.status()[name].attached)
        .collect();
    assert_eq!(attached.len(), 1, "{:?}", probes.status());
    assert_eq!(probes.exit_source(), Some(attached[0]));
    assert_eq!(probes.status().len(), 6, "{:?}", probes.status());
}

#[test]
fn a_forced_exit_source_leaves_the_other_unselected() {
    common::require_host();
    let probes = Probes::load(options(KvmExitSource::KvmUserspaceExit)).expect("probes load");
    assert_eq!(probes.exit_source(), Some(programs::KVM_USERSPACE_EXIT));
    let other = &probes.status()[programs::KVM_EXIT];
    assert!(!other.attached, "{other:?}");
    assert!(other.detail.contains("not selected"), "{other:?}");
}

#[test]
fn this_host_has_a_kvm_vendor_module() {
    common::require_host();
    // The testbed runs nested PVM KVM; a bare-metal CI host would show kvm_intel/kvm_amd.
    assert!(
        kvm_vendor_module(Path::new("/sys/module")).is_some(),
        "no KVM vendor module (kvm_intel, kvm_amd, kvm_pvm) in /sys/module: load one (modprobe)"
    );
}

#[test]
fn kernel_btf_gives_task_struct_layout() {
    common::require_host();
    let btf = KernelBtf::read(Path::new(pinsight::probes::VMLINUX_BTF)).expect("kernel BTF");
    let pid = btf
        .member_offset("task_struct", "pid")
        .expect("task_struct.pid");
    let tgid = btf
        .member_offset("task_struct", "tgid")
        .expect("task_struct.tgid");
    // pid and tgid are adjacent pid_t members in every kernel since 2.6.
    assert_eq!(tgid, pid + 4, "pid at {pid}, tgid at {tgid}");
    assert!(pid > 0 && pid.is_multiple_of(4));
    btf.member_offset("sched_entity", "sum_exec_runtime")
        .expect("sched_entity.sum_exec_runtime");
    // sched_migrate_task reads the task's CPU from its thread_info (in the task, x86 since
    // 5.16), where task_cpu() does.
    assert_eq!(btf.member_offset("task_struct", "thread_info").unwrap(), 0);
    btf.member_offset("thread_info", "cpu")
        .expect("thread_info.cpu");
    let err = btf
        .member_offset("task_struct", "no_such_member")
        .unwrap_err();
    assert!(err.to_string().contains("no_such_member"), "{err}");
}

#[test]
fn tracefs_formats_of_the_probed_tracepoints_parse() {
    common::require_host();
    // Cross-checks the parser against the kernel's own files (tracefs is mounted by setup).
    // kvm:kvm_exit is the one classic tracepoint the probes read a record of (its offsets
    // are the defaults the program is built with), and one that differs from another:
    // kvm_userspace_exit's errno follows its reason.
    let reason = tracefs::field_offset("kvm", "kvm_exit", "exit_reason").unwrap();
    let isa = tracefs::field_offset("kvm", "kvm_exit", "isa").unwrap();
    assert_eq!((reason, isa), (8, 24), "kvm_exit's record moved");
    let reason = tracefs::field_offset("kvm", "kvm_userspace_exit", "reason").unwrap();
    let errno = tracefs::field_offset("kvm", "kvm_userspace_exit", "errno").unwrap();
    assert_eq!(errno, reason + 4);
    // A missing event names itself; only a missing kvm category blames the kvm module.
    let err = tracefs::field_offset("kvm", "no_such_event", "x").unwrap_err();
    let text = err.to_string();
    assert!(text.contains("kvm:no_such_event"), "{text}");
    assert!(!text.contains("module"), "{text}");
    let err = tracefs::field_offset("sched", "no_such_event", "x").unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("sched:no_such_event") && !text.contains("kvm"),
        "{text}"
    );
}
