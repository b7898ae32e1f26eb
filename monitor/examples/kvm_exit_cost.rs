//! Measures what the KVM exit probe costs per run, against an empty program on the same
//! tracepoint, before (older objects, e.g. main's hash-map probe) and after (this build),
//! all attached at once so every program runs on exactly the same exits.
//!
//!     scripts/build-spin-guest.sh /tmp/pc 500        # the busy guest
//!     flock -o /work/vmtest.lock target/release/examples/kvm_exit_cost \
//!         --guest /tmp/pc/spin-500.elf --compare main=OLD.o [--seconds 4] [--rounds 5]
//!
//! It boots a QEMU (no libvirt) running the busy guest, whose vCPU exits to QEMU at every
//! `out`, and alternates two scenarios per round: "untracked" (nobody tracks the vCPU: the
//! cost every thread on a host pays) and "tracked" (both probes track it: the cost per
//! counted exit). Per program and scenario: ns per run from bpf_stats (run_time_ns /
//! run_cnt over the scenario), the ratio to the empty program in the same interval, and
//! over the rounds the median with min and max.

// A benchmark stops at the first failure with its reason; clippy::unwrap_used guards the
// daemon's own paths.
#![allow(clippy::unwrap_used)]

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aya::maps::Array;
use aya::programs::Program;
use aya::{Ebpf, EbpfLoader};
use clap::Parser;
use monitor_common::programs::KVM_USERSPACE_EXIT_EMPTY;
use monitor_common::programs::{KVM_EXIT, KVM_EXIT_EMPTY, KVM_USERSPACE_EXIT};
use monitor_common::tracked::slot_words;
use pinsight::probes::{embedded_object, KvmExitSource, ProbeOptions, Probes};

/// Cost of the KVM exit probe, before and after, against an empty program.
#[derive(Parser)]
struct Args {
    /// The busy guest (scripts/build-spin-guest.sh OUTDIR ITERATIONS prints its path).
    #[arg(long)]
    guest: PathBuf,
    /// Other builds' eBPF objects to compare with, as LABEL=PATH (repeatable): their
    /// kvm_userspace_exit / kvm_exit and a TRACKED_TIDS slot table of the same layout.
    #[arg(long = "compare", value_name = "LABEL=PATH")]
    compare: Vec<String>,
    /// kvm_userspace_exit (fires under nested KVM) or kvm_exit (bare metal).
    #[arg(long, default_value = KVM_USERSPACE_EXIT)]
    source: String,
    /// Seconds per scenario per round.
    #[arg(long, default_value_t = 4)]
    seconds: u64,
    /// Rounds (each: untracked, then tracked).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// A QEMU running the guest, killed (by its pid) when dropped.
struct Guest {
    pid: u32,
}

impl Guest {
    fn boot(kernel: &Path) -> Guest {
        let pidfile =
            std::env::temp_dir().join(format!("kvm_exit_cost-{}.pid", std::process::id()));
        let status = Command::new("qemu-system-x86_64")
            .args(["-name", "kvm_exit_cost,debug-threads=on"])
            .args(["-machine", "pc,accel=kvm", "-m", "64", "-smp", "1"])
            .arg("-kernel")
            .arg(kernel)
            .args(["-display", "none", "-nodefaults", "-daemonize", "-pidfile"])
            .arg(&pidfile)
            .status()
            .expect("qemu-system-x86 installed (scripts/setup.sh)");
        assert!(status.success(), "qemu failed: {status}");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pidfile);
        Guest { pid }
    }

    /// The tid of the thread QEMU names `CPU 0/KVM`.
    fn vcpu_tid(&self) -> u32 {
        for _ in 0..100 {
            for task in std::fs::read_dir(format!("/proc/{}/task", self.pid)).unwrap() {
                let task = task.unwrap().path();
                let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
                if comm.trim() == "CPU 0/KVM" {
                    return task.file_name().unwrap().to_str().unwrap().parse().unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("QEMU {} has no CPU 0/KVM thread", self.pid);
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of the QEMU this program started.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
    }
}

/// Loads `object` and attaches only its program `name` to kvm:`event`, as the object builds
/// it: a raw tracepoint (this build's kvm_userspace_exit) or a classic one (kvm_exit, and
/// kvm_userspace_exit in objects before 2026-12-07).
fn attach_one(object: &[u8], name: &str, event: &str, loader: &mut EbpfLoader) -> Ebpf {
    let mut ebpf = loader.load(object).unwrap();
    match ebpf.program_mut(name).unwrap() {
        Program::RawTracePoint(prog) => {
            prog.load().unwrap();
            prog.attach(event).unwrap();
        }
        Program::TracePoint(prog) => {
            prog.load().unwrap();
            prog.attach("kvm", event).unwrap();
        }
        other => panic!("{name}: neither a raw nor a classic tracepoint: {other:?}"),
    }
    ebpf
}

fn main() {
    let args = Args::parse();
    let (program, empty_name) = match args.source.as_str() {
        KVM_USERSPACE_EXIT => (KVM_USERSPACE_EXIT, KVM_USERSPACE_EXIT_EMPTY),
        KVM_EXIT => (KVM_EXIT, KVM_EXIT_EMPTY),
        other => panic!("--source: {other} is neither {KVM_USERSPACE_EXIT} nor {KVM_EXIT}"),
    };
    let _stats = common::BpfStats::set(true);
    let guest = Guest::boot(&args.guest);
    let vcpu = guest.vcpu_tid();

    let pid_max = pinsight::probes::pid_max();
    let objects = common::compared_objects(&args.compare);
    let source = if program == KVM_EXIT {
        KvmExitSource::KvmExit
    } else {
        KvmExitSource::KvmUserspaceExit
    };
    // Each round loads and attaches every program afresh, in common::attach_order.
    let attach_all = |round: usize| {
        let mut empty = None;
        let mut others: Vec<Option<common::Other>> = (0..objects.len()).map(|_| None).collect();
        let mut probes = None;
        for turn in common::attach_order(round, objects.len()) {
            match turn {
                common::Turn::Empty => {
                    empty = Some(attach_one(
                        embedded_object(),
                        empty_name,
                        program,
                        &mut EbpfLoader::new(),
                    ));
                }
                common::Turn::Other(i) => {
                    // Each older object loaded as its daemon would, slot table sized for
                    // pid_max.
                    let (label, object) = &objects[i];
                    let mut ebpf = attach_one(
                        object,
                        program,
                        program,
                        EbpfLoader::new()
                            .set_max_entries("TRACKED_TIDS", slot_words(pid_max))
                            .set_max_entries("RUN_NS", 1025)
                            .set_max_entries("THREAD_RUN", 1025)
                            .set_max_entries("KVM_EXITS", 16384)
                            .set_max_entries("CPU_TOPO", 64),
                    );
                    let tids = Array::try_from(ebpf.take_map("TRACKED_TIDS").unwrap()).unwrap();
                    others[i] = Some((label.clone(), ebpf, tids));
                }
                common::Turn::ThisBuild => {
                    let loaded = Probes::load(ProbeOptions {
                        max_threads: 1024,
                        max_other_threads: 64,
                        kvm_exit_source: source,
                        cpu_topo: Default::default(),
                    })
                    .unwrap();
                    assert_eq!(loaded.exit_source(), Some(program));
                    probes = Some(loaded);
                }
            }
        }
        let others: Vec<common::Other> = others.into_iter().map(Option::unwrap).collect();
        (empty.unwrap(), others, probes.unwrap())
    };

    let mut who: Vec<String> = vec!["empty".into()];
    who.extend(objects.iter().map(|(label, _)| label.clone()));
    who.push("this build".into());
    println!(
        "## {program}: ns per run (bpf_stats), all {} programs attached at once (attach order rotated each round), {} rounds x {} s per scenario\n",
        who.len(),
        args.rounds,
        args.seconds
    );
    println!(
        "vCPU thread {vcpu} of QEMU {}, guest {}\n",
        guest.pid,
        args.guest.display()
    );
    let head: Vec<String> = who.iter().map(|w| format!("{w} ns/run")).collect();
    println!("| round | scenario | runs | {} |", head.join(" | "));
    println!("|---|---|---|{}", "---|".repeat(who.len()));
    // (scenario, program index, ns per run)
    let mut ns: Vec<(&str, usize, f64)> = Vec::new();
    for round in 1..=args.rounds {
        let (empty, mut others, mut probes) = attach_all(round);
        let mut point = common::OnePoint {
            empty: (&empty, empty_name),
            others: &mut others,
            probes: &mut probes,
            program,
        };
        for (scenario, track) in [("untracked", false), ("tracked", true)] {
            let per = point.scenario(round, scenario, vcpu, track, || {
                std::thread::sleep(Duration::from_secs(args.seconds))
            });
            ns.extend(per.iter().enumerate().map(|(i, x)| (scenario, i, *x)));
        }
    }
    common::print_summary(&["untracked", "tracked"], &who, &ns);
}
