//! Measures what the sched_switch probe costs, against the floor any program on the same
//! attach point pays (an empty program loaded the same way), and against older builds' probes
//! (`--compare LABEL=OBJ`), in one run on this machine.
//!
//!     target/release/examples/probe_cost [--seconds 5] [--rounds 7] [--compare main=OLD.o]
//!         [--sleepers 64]                                        (--help lists them)
//!
//! Part 1 (bpf_stats): the empty program, each older object's sched_switch and this build's
//! probes are attached at the same time (attach order rotated each round), so all run on
//! exactly the same switches; the ratio of each mean run time to the empty program's in the
//! same interval is what that build adds. Four scenarios per round:
//! - busy untracked: a two-thread pipe ping-pong nobody tracks (the common case on a host);
//! - busy tracked: the same ping-pong with both threads tracked (worst case: every switch has
//!   a tracked thread on one side);
//! - quiet untracked: no load of our own: the host's own switches, and those of `--sleepers`
//!   threads that wake a few times a second each at thread ids spread over all of pid_max
//!   (placed through ns_last_pid), as a long-running host's daemons are: the case where the
//!   tables' lines are cold at every switch;
//! - quiet tracked: the same, with one tracked thread waking every 2 ms.
//!
//! Part 2 (`perf bench sched pipe`, both ends pinned to CPU 0): none / empty / each older
//! object / this build alternating, nothing tracked, several rounds; median and spread of
//! usecs/op.
//!
//! The empty program and older objects are loaded here: they are benchmark-only, so the
//! library has no API for them.

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use aya::maps::{Array, MapData};
use aya::programs::BtfTracePoint;
use aya::{Btf, Ebpf, EbpfLoader};
use clap::Parser;
use common::thread::{gettid, CpuCgroups};
use monitor_common::programs::{SCHED_SWITCH, SCHED_SWITCH_EMPTY};
use monitor_common::sched_migrate_task::CpuTopo;
use monitor_common::sched_switch::{TASK_DEPTH_OFFSET, TASK_PID_OFFSET, TASK_RUNTIME_OFFSET};
use monitor_common::tracked::{slot_shift, slot_word, slot_words, TRACKED_TIDS};
use pinsight::probes::btf::KernelBtf;
use pinsight::probes::{embedded_object, KvmExitSource, ProbeOptions, Probes, VMLINUX_BTF};

/// Cost of pinsight's sched_switch probe against an empty program on the same attach point.
#[derive(Parser)]
struct Args {
    /// Seconds each bpf_stats scenario runs.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of the bpf_stats scenarios, and of `perf bench sched pipe` per configuration.
    #[arg(long, default_value_t = 7)]
    rounds: u64,
    /// Other builds' eBPF objects to compare with, as LABEL=PATH (repeatable): their
    /// sched_switch, and a TRACKED_TIDS slot table (and TRACKED_BITS, if they have one) of
    /// this build's layout.
    #[arg(long = "compare", value_name = "LABEL=PATH")]
    compare: Vec<String>,
    /// Threads that each wake every 50-150 ms for the whole run, at thread ids spread evenly
    /// over pid_max: the quiet scenarios' background switches.
    #[arg(long, default_value_t = 0)]
    sleepers: u32,
    /// Skip part 2 (perf bench).
    #[arg(long)]
    no_perf: bool,
    /// CPU cgroup depth of the tracked threads, as a VM's (libvirt on cgroup v1 puts vCPU
    /// threads at 3: machine/qemu-N-NAME.libvirt-qemu/vcpuN); a sleeping tracked thread stays
    /// there all along, as a host's idle VMs do, while the untracked threads stay in the root.
    /// 0 puts everything in the root, where the depth filter lets every switch through.
    #[arg(long, default_value_t = 3)]
    vm_depth: usize,
}

/// The one-bit-per-tid bitmap that a trial build (2eed912, not kept: BENCHMARKS.md) read
/// before its slot table: 64 thread ids a word. An object compared here may have it.
const TRACKED_BITS: &str = "TRACKED_BITS";

/// The bitmap word of `tid`, and its bit there.
fn bit_of(tid: u32) -> (u32, u64) {
    (tid / 64, 1 << (tid % 64))
}

/// An older object with its sched_switch attached, and its tables of tracked threads.
struct Other {
    ebpf: Ebpf,
    slots: Array<MapData, u64>,
    bits: Option<Array<MapData, u64>>,
}

impl Other {
    fn load(object: &[u8], pid_max: u32) -> Other {
        let btf = KernelBtf::read(Path::new(VMLINUX_BTF)).unwrap();
        let pid = btf.member_offset("task_struct", "pid").unwrap();
        let se = btf.member_offset("task_struct", "se").unwrap();
        let runtime = se
            + btf
                .member_offset("sched_entity", "sum_exec_runtime")
                .unwrap();
        let depth = se + btf.member_offset("sched_entity", "depth").unwrap();
        let mut ebpf = EbpfLoader::new()
            .set_max_entries(TRACKED_TIDS, slot_words(pid_max))
            .set_max_entries(TRACKED_BITS, pid_max.div_ceil(64))
            .set_max_entries("RUN_NS", 1025)
            .set_max_entries("THREAD_RUN", 1025)
            .set_max_entries("KVM_EXITS", 1025)
            .set_max_entries("CPU_TOPO", 64)
            .set_global(TASK_PID_OFFSET, &pid, true)
            .set_global(TASK_RUNTIME_OFFSET, &runtime, true)
            .set_global(TASK_DEPTH_OFFSET, &depth, false)
            .load(object)
            .unwrap();
        let prog: &mut BtfTracePoint = ebpf.program_mut(SCHED_SWITCH).unwrap().try_into().unwrap();
        prog.load("sched_switch", &Btf::from_sys_fs().unwrap())
            .unwrap();
        prog.attach().unwrap();
        let slots = Array::try_from(ebpf.take_map(TRACKED_TIDS).unwrap()).unwrap();
        let bits = ebpf
            .take_map(TRACKED_BITS)
            .map(|m| Array::try_from(m).unwrap());
        Other { ebpf, slots, bits }
    }

    /// Publishes `tid` in `slot` (0: untracks it), the slot before the bit as the daemon does.
    fn set(&mut self, tid: u32, slot: u32) {
        let (index, shift) = (slot_word(tid), slot_shift(tid));
        let word = self.slots.get(&index, 0).unwrap();
        let word = (word & !(0xffff << shift)) | (u64::from(slot) << shift);
        self.slots.set(index, word, 0).unwrap();
        if let Some(bits) = &mut self.bits {
            let (index, bit) = bit_of(tid);
            let word = bits.get(&index, 0).unwrap();
            let word = match slot {
                0 => word & !bit,
                _ => word | bit,
            };
            bits.set(index, word, 0).unwrap();
        }
    }
}

/// Loads the daemon's object and attaches only `sched_switch_empty`; detached when dropped.
fn load_empty_sched_switch() -> anyhow::Result<Ebpf> {
    let mut ebpf = EbpfLoader::new().load(embedded_object())?;
    let btf = Btf::from_sys_fs()?;
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(SCHED_SWITCH_EMPTY)
        .ok_or_else(|| anyhow::anyhow!("the object has no {SCHED_SWITCH_EMPTY}"))?
        .try_into()?;
    prog.load("sched_switch", &btf)?;
    prog.attach()?;
    Ok(ebpf)
}

/// (run time ns, run count) of program `name` of `ebpf`, from bpf_stats.
fn run_stats(ebpf: &Ebpf, name: &str) -> (u64, u64) {
    let info = ebpf
        .program(name)
        .and_then(|p| p.info().ok())
        .expect("the program is loaded");
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// (run time ns, run count) of pinsight's sched_switch, from bpf_stats.
fn sched_switch_run_stats(probes: &Probes) -> (u64, u64) {
    let stats = probes.program_stats().expect("bpf_stats enabled");
    let s = stats
        .iter()
        .find(|s| s.program == SCHED_SWITCH)
        .expect("sched_switch attached");
    (s.run_time_ns, s.run_count)
}

/// Two threads bouncing a byte over a socket pair until `stop`; returns their tids.
fn ping_pong(stop: Arc<AtomicBool>) -> (Vec<u32>, Vec<std::thread::JoinHandle<u64>>) {
    let (mut a, mut b) = UnixStream::pair().expect("socketpair");
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    let stop2 = stop.clone();
    let ping = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        let mut n = 0;
        let mut buf = [0u8; 1];
        while !stop.load(Ordering::Relaxed) {
            if a.write_all(&[1]).is_err() || a.read_exact(&mut buf).is_err() {
                break;
            }
            n += 1;
        }
        drop(a);
        n
    });
    let pong = std::thread::spawn(move || {
        tx2.send(gettid()).unwrap();
        let mut buf = [0u8; 1];
        let mut n = 0;
        while b.read_exact(&mut buf).is_ok() && b.write_all(&buf).is_ok() {
            n += 1;
            if stop2.load(Ordering::Relaxed) {
                break;
            }
        }
        n
    });
    (
        vec![rx.recv().unwrap(), rx.recv().unwrap()],
        vec![ping, pong],
    )
}

fn options() -> ProbeOptions {
    ProbeOptions {
        max_threads: 1024,
        max_other_threads: 64,
        kvm_exit_source: KvmExitSource::Off,
        // 64 one-CPU cores, alternating between two socket-nodes.
        cpu_topo: (0..64)
            .map(|c| {
                let socket = c % 2;
                (
                    c,
                    CpuTopo {
                        core: c,
                        node: socket,
                        socket,
                    },
                )
            })
            .collect(),
    }
}

fn perf_pipe(loops: u64) -> f64 {
    // Both ends on CPU 0: on this 2-CPU VM, unpinned runs flip between "same CPU" (~2 us/op)
    // and "two CPUs" (~30 us/op, cross-CPU wake-ups under nested virtualisation), which
    // drowns any probe cost in noise.
    let out = Command::new("taskset")
        .args([
            "-c",
            "0",
            "perf",
            "bench",
            "sched",
            "pipe",
            "-l",
            &loops.to_string(),
        ])
        .output()
        .expect("perf (linux-perf) installed by scripts/setup.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.trim().strip_suffix("usecs/op"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("unexpected perf output: {text}"))
}

fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Starts `count` threads that wake every 50-150 ms until `stop`, with thread ids spread
/// evenly over 300..pid_max: each id is asked for through ns_last_pid (another process
/// forking at the same moment may take it, then the thread gets a nearby one).
fn sleepers(count: u32, pid_max: u32, stop: Arc<AtomicBool>) -> Vec<u32> {
    let (tx, rx) = mpsc::channel();
    let step = (pid_max - 300) / count.max(1);
    let mut tids = Vec::new();
    for i in 0..count {
        let wanted = 300 + i * step + step / 2;
        std::fs::write("/proc/sys/kernel/ns_last_pid", (wanted - 1).to_string())
            .expect("root needed to write ns_last_pid");
        let (tx, stop) = (tx.clone(), stop.clone());
        std::thread::spawn(move || {
            tx.send(gettid()).unwrap();
            let mut n = u64::from(i);
            while !stop.load(Ordering::Relaxed) {
                n = n
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                std::thread::sleep(Duration::from_millis(50 + (n >> 33) % 100));
            }
        });
        tids.push(rx.recv().unwrap());
    }
    tids
}

/// A thread that wakes every 2 ms until `stop`: the quiet scenario's tracked thread.
fn ticker(stop: Arc<AtomicBool>) -> u32 {
    ticker_every(stop, Duration::from_millis(2))
}

/// A thread that wakes every `period` until `stop`.
fn ticker_every(stop: Arc<AtomicBool>, period: Duration) -> u32 {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(period);
        }
    });
    rx.recv().unwrap()
}

/// Every program under test, attached afresh: the empty one, the older objects, this build;
/// and the threads tracked all along (the sleeping "VM" thread).
struct Attached {
    empty: Ebpf,
    others: Vec<Other>,
    probes: Probes,
    resident: Vec<u32>,
}

impl Attached {
    /// Programs on one tracepoint run one after the other in attach order, so each round
    /// attaches them in an order rotated by `round`.
    fn all(
        round: usize,
        objects: &[(String, Vec<u8>)],
        pid_max: u32,
        resident: &[u32],
    ) -> Attached {
        let n = objects.len() + 2;
        let mut empty = None;
        let mut others: Vec<Option<Other>> = (0..objects.len()).map(|_| None).collect();
        let mut probes = None;
        for i in (0..n).map(|i| (i + round) % n) {
            if i == 0 {
                empty = Some(load_empty_sched_switch().expect("load empty program"));
            } else if i <= objects.len() {
                others[i - 1] = Some(Other::load(&objects[i - 1].1, pid_max));
            } else {
                probes = Some(Probes::load(options()).expect("load pinsight probes"));
            }
        }
        let mut attached = Attached {
            empty: empty.unwrap(),
            others: others.into_iter().map(Option::unwrap).collect(),
            probes: probes.unwrap(),
            resident: Vec::new(),
        };
        attached.track(resident, true);
        attached.resident = resident.to_vec();
        attached
    }

    /// (run time, run count) of each program: empty, older objects, this build.
    fn sample(&self) -> Vec<(u64, u64)> {
        let mut v = vec![run_stats(&self.empty, SCHED_SWITCH_EMPTY)];
        v.extend(self.others.iter().map(|o| run_stats(&o.ebpf, SCHED_SWITCH)));
        v.push(sched_switch_run_stats(&self.probes));
        v
    }

    /// Tracks (`on`) or untracks `tids` in every build, then reads this build's maps once, as
    /// the daemon's tick does (which sets its depth filter).
    fn track(&mut self, tids: &[u32], on: bool) {
        let first_slot = self.resident.len() as u32 + 1;
        for (n, &tid) in tids.iter().enumerate() {
            for other in &mut self.others {
                other.set(tid, if on { first_slot + n as u32 } else { 0 });
            }
            if on {
                self.probes.track(tid).expect("track");
            } else {
                self.probes.untrack(tid).expect("untrack");
            }
        }
        self.probes.read().expect("read this build's maps");
    }

    /// This build's depth filter word now.
    fn filter_word(&self) -> u64 {
        self.probes
            .depth_filter()
            .expect("depth filter readable")
            .word
    }
}

/// Where the tracked threads go: the cgroups, and the depth in them (None: all in the root).
type VmCgroup<'a> = Option<(&'a CpuCgroups, usize)>;

/// One scenario over `seconds`: ns per run of each program, switches seen, and this build's
/// depth filter word during it. A tracked scenario's threads go to `vm`'s depth first.
fn scenario(
    attached: &mut Attached,
    name: &str,
    seconds: u64,
    vm: VmCgroup,
) -> (Vec<f64>, u64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (tids, handles) = match name {
        "busy untracked" | "busy tracked" => ping_pong(stop.clone()),
        _ => (vec![ticker(stop.clone())], Vec::new()),
    };
    let track = name.ends_with(" tracked");
    if track {
        if let Some((cgroups, depth)) = vm {
            tids.iter().for_each(|&tid| cgroups.move_thread(tid, depth));
        }
        attached.track(&tids, true);
    }
    let word = attached.filter_word();
    let start = attached.sample();
    std::thread::sleep(Duration::from_secs(seconds));
    let end = attached.sample();
    stop.store(true, Ordering::Relaxed);
    if track {
        attached.track(&tids, false);
    }
    for h in handles {
        h.join().unwrap();
    }
    let per = start
        .iter()
        .zip(&end)
        .map(|(a, b)| (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64)
        .collect();
    (per, end[0].1 - start[0].1, word)
}

/// A thread that sleeps (waking once a second) until `stop`, at `vm`'s depth: a tracked,
/// idle VM's thread, so that the depth filter has a VM's depth in it in every scenario.
fn resident(stop: Arc<AtomicBool>, vm: VmCgroup) -> u32 {
    let tid = ticker_every(stop, Duration::from_secs(1));
    if let Some((cgroups, depth)) = vm {
        cgroups.move_thread(tid, depth);
    }
    tid
}

const SCENARIOS: [&str; 4] = [
    "busy untracked",
    "busy tracked",
    "quiet untracked",
    "quiet tracked",
];

fn main() {
    let args = Args::parse();
    let stats_were_on = pinsight::probes::bpf_stats_enabled();
    std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1").expect("root needed for bpf_stats");
    let pid_max = pinsight::probes::pid_max();
    let objects = common::compared_objects(&args.compare);
    let stop_sleepers = Arc::new(AtomicBool::new(false));
    let sleeper_tids = sleepers(args.sleepers, pid_max, stop_sleepers.clone());
    let cgroups = (args.vm_depth > 0).then(|| CpuCgroups::make(args.vm_depth));
    let vm = cgroups.as_ref().map(|c| (c, args.vm_depth));
    let resident_tid = resident(stop_sleepers.clone(), vm);
    let mut who: Vec<String> = vec!["empty".into()];
    who.extend(objects.iter().map(|(label, _)| label.clone()));
    who.push("this build".into());

    println!(
        "## sched_switch: ns per run (bpf_stats), all {} programs attached at once (attach order rotated each round), {} rounds x {} s per scenario\n",
        who.len(),
        args.rounds,
        args.seconds
    );
    println!(
        "pid_max {pid_max}; {} sleeper threads, tids {:?}; tracked threads at CPU cgroup depth {} (a sleeping one all along), untracked ones at 0\n",
        sleeper_tids.len(),
        sleeper_tids,
        args.vm_depth
    );
    let head: Vec<String> = who.iter().map(|w| format!("{w} ns/run")).collect();
    println!(
        "| round | scenario | switches | depth filter | {} |",
        head.join(" | ")
    );
    println!("|---|---|---|---|{}", "---|".repeat(who.len()));
    // (scenario, program index, ns per run, ratio to empty)
    let mut ns: Vec<(&str, usize, f64, f64)> = Vec::new();
    for round in 1..=args.rounds as usize {
        let mut attached = Attached::all(round, &objects, pid_max, &[resident_tid]);
        for name in SCENARIOS {
            let (per, runs, word) = scenario(&mut attached, name, args.seconds, vm);
            let cells: Vec<String> = per.iter().map(|x| format!("{x:.1}")).collect();
            println!(
                "| {round} | {name} | {runs} | {word:#x} | {} |",
                cells.join(" | ")
            );
            ns.extend(
                per.iter()
                    .enumerate()
                    .map(|(i, x)| (name, i, *x, x / per[0])),
            );
        }
    }
    println!("\n| scenario | program | ns/run median (min-max) | ratio to empty, same interval: median (min-max) | target |");
    println!("|---|---|---|---|---|");
    for name in SCENARIOS {
        let target = if name.ends_with(" tracked") {
            1.5
        } else {
            1.10
        };
        for (i, program) in who.iter().enumerate() {
            let of = |pick: fn(&(&str, usize, f64, f64)) -> f64| -> Vec<f64> {
                ns.iter()
                    .filter(|r| r.0 == name && r.1 == i)
                    .map(pick)
                    .collect()
            };
            let (m, lo, hi) = median_spread(of(|r| r.2));
            if i == 0 {
                println!("| {name} | {program} | {m:.1} ({lo:.1}-{hi:.1}) | 1 | |");
                continue;
            }
            let (r, rlo, rhi) = median_spread(of(|r| r.3));
            let met = if r <= target { "met" } else { "not met" };
            println!(
                "| {name} | {program} | {m:.1} ({lo:.1}-{hi:.1}) | {r:.2}x ({rlo:.2}-{rhi:.2}) | <= {target}x: {met} |"
            );
        }
    }

    if !args.no_perf {
        println!(
            "\n## perf bench sched pipe (usecs/op; {} rounds, configurations alternating, nothing tracked)\n",
            args.rounds
        );
        let loops = 200_000;
        let mut results: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for _ in 0..args.rounds {
            results
                .entry("1 none".into())
                .or_default()
                .push(perf_pipe(loops));
            let empty = load_empty_sched_switch().expect("load empty");
            results
                .entry("2 empty program".into())
                .or_default()
                .push(perf_pipe(loops));
            drop(empty);
            for (n, (label, object)) in objects.iter().enumerate() {
                let other = Other::load(object, pid_max);
                results
                    .entry(format!("{} {label}", n + 3))
                    .or_default()
                    .push(perf_pipe(loops));
                drop(other);
            }
            let probes = Probes::load(options()).expect("load probes");
            results
                .entry(format!("{} this build", objects.len() + 3))
                .or_default()
                .push(perf_pipe(loops));
            drop(probes);
        }
        let (base, _, _) = median_spread(results["1 none"].clone());
        println!("| configuration | median | min | max | slowdown vs none (median) |");
        println!("|---|---|---|---|---|");
        for (name, v) in &results {
            let (m, lo, hi) = median_spread(v.clone());
            println!(
                "| {} | {m:.3} | {lo:.3} | {hi:.3} | {:+.1}% |",
                name.split_once(' ').unwrap().1,
                (m / base - 1.0) * 100.0
            );
        }
    }
    stop_sleepers.store(true, Ordering::Relaxed);
    drop(cgroups);
    if !stats_were_on {
        let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    }
}
