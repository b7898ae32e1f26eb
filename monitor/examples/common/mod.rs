//! What the probe cost benchmarks share: the eBPF objects of other builds to compare with, the
//! median and spread of a series, and (from the root tests' helpers) this process's threads
//! and CPU cgroups.

// Each example includes this module and uses a part of it.
#![allow(dead_code)]

/// Thread ids, run-time clock, CPU cgroups: the root tests' own helpers.
#[path = "../../tests/common/thread.rs"]
pub mod thread;

/// Each `LABEL=PATH` of `--compare`, with the object file read.
pub fn compared_objects(specs: &[String]) -> Vec<(String, Vec<u8>)> {
    specs
        .iter()
        .map(|spec| {
            let (label, path) = spec.split_once('=').expect("--compare LABEL=PATH");
            let object = std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
            (label.to_string(), object)
        })
        .collect()
}

/// (median, min, max) of a series (the upper median of an even count).
pub fn median_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// Per program, ns per run between two bpf_stats samples of (run time ns, run count).
pub fn ns_per_run(start: &[(u64, u64)], end: &[(u64, u64)]) -> Vec<f64> {
    start
        .iter()
        .zip(end)
        .map(|(a, b)| (b.0 - a.0) as f64 / (b.1 - a.1).max(1) as f64)
        .collect()
}

/// [`ns_per_run`], and prints the round's row (the run count is program 0's).
pub fn round_row(
    round: usize,
    scenario: &str,
    start: &[(u64, u64)],
    end: &[(u64, u64)],
) -> Vec<f64> {
    let per = ns_per_run(start, end);
    let runs = end[0].1 - start[0].1;
    let cells: Vec<String> = per.iter().map(|x| format!("{x:.1}")).collect();
    println!("| {round} | {scenario} | {runs} | {} |", cells.join(" | "));
    per
}

/// Prints, per scenario and program (`who`, program 0 the empty one), ns per run median
/// (min-max) over the rounds and the ratio to the empty program in the same interval, against
/// issue 12's targets (<= 1.5x for a scenario whose last word is "tracked", else <= 1.10x).
/// `ns`: (scenario, program, ns/run), rounds in order.
pub fn print_summary(scenarios: &[&str], who: &[String], ns: &[(&str, usize, f64)]) {
    println!("\n| scenario | program | ns/run median (min-max) | ratio to empty, same interval: median (min-max) | target |");
    println!("|---|---|---|---|---|");
    for &scenario in scenarios {
        let tracked = scenario.rsplit(' ').next() == Some("tracked");
        let target = if tracked { 1.5 } else { 1.10 };
        let of = |i: usize| -> Vec<f64> {
            ns.iter()
                .filter(|(s, j, _)| *s == scenario && *j == i)
                .map(|(_, _, x)| *x)
                .collect()
        };
        let empty_ns = of(0);
        for (i, name) in who.iter().enumerate() {
            let (m, lo, hi) = median_spread(of(i));
            if i == 0 {
                println!("| {scenario} | {name} | {m:.1} ({lo:.1}-{hi:.1}) | 1 | |");
                continue;
            }
            let ratios: Vec<f64> = of(i).iter().zip(&empty_ns).map(|(x, e)| x / e).collect();
            let (r, rlo, rhi) = median_spread(ratios);
            let met = if r <= target { "met" } else { "not met" };
            println!(
                "| {scenario} | {name} | {m:.1} ({lo:.1}-{hi:.1}) | {r:.2}x ({rlo:.2}-{rhi:.2}) | <= {target}x: {met} |"
            );
        }
    }
}

/// (run time ns, run count) of program `name` of `ebpf`, from bpf_stats.
pub fn run_stats(ebpf: &aya::Ebpf, name: &str) -> (u64, u64) {
    let info = ebpf
        .program(name)
        .and_then(|p| p.info().ok())
        .unwrap_or_else(|| panic!("program {name} is loaded"));
    (info.run_time().as_nanos() as u64, info.run_count())
}

/// (run time ns, run count) of pinsight's program `name`, from bpf_stats.
pub fn pinsight_stats(probes: &pinsight::probes::Probes, name: &str) -> (u64, u64) {
    let stats = probes.program_stats().expect("bpf_stats enabled");
    let s = stats
        .iter()
        .find(|s| s.program == name)
        .unwrap_or_else(|| panic!("{name} attached"));
    (s.run_time_ns, s.run_count)
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// kernel.bpf_stats_enabled set for a benchmark's run; the value before is put back when
/// dropped (also when the benchmark panics).
pub struct BpfStats {
    before: String,
}

impl BpfStats {
    /// Switches bpf_stats on (`on`) or off; needs root.
    pub fn set(on: bool) -> BpfStats {
        let before = std::fs::read_to_string(BPF_STATS).expect("read kernel.bpf_stats_enabled");
        std::fs::write(BPF_STATS, if on { "1" } else { "0" })
            .expect("root needed to set kernel.bpf_stats_enabled");
        BpfStats { before }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.before.trim());
    }
}

/// One step of a round's attaching: the empty program, an older build (by its index in
/// `--compare`), or this build.
pub enum Turn {
    Empty,
    Other(usize),
    ThisBuild,
}

/// The order in which a round attaches the empty program, `others` older builds and this
/// build. Programs on one tracepoint run one after the other in attach order, so each round
/// starts one further along: over the rounds, each program runs first, second, ... in turn.
pub fn attach_order(round: usize, others: usize) -> impl Iterator<Item = Turn> {
    let n = others + 2;
    (0..n).map(move |i| match (i + round) % n {
        0 => Turn::Empty,
        i if i <= others => Turn::Other(i - 1),
        _ => Turn::ThisBuild,
    })
}

/// An older build's object attached beside this build's: its label, the loaded object, its
/// slot table of tracked threads.
pub type Other = (String, aya::Ebpf, aya::maps::Array<aya::maps::MapData, u64>);

/// The programs of one tracepoint under test, all attached at once: an empty program, older
/// builds' `program`s, and this build's.
pub struct OnePoint<'a> {
    /// The object holding the empty program, and its name.
    pub empty: (&'a aya::Ebpf, &'a str),
    /// The older builds.
    pub others: &'a mut [Other],
    /// This build's probes.
    pub probes: &'a mut pinsight::probes::Probes,
    /// The program compared, by name.
    pub program: &'a str,
}

impl OnePoint<'_> {
    /// One scenario of a round: `tid` tracked by every build (slot 1 in the older tables,
    /// the slot pinsight hands out in this one) when `tracked`, `work` run, and each
    /// program's ns per run over it, printed as the round's row and returned.
    pub fn scenario(
        &mut self,
        round: usize,
        scenario: &str,
        tid: u32,
        tracked: bool,
        work: impl FnOnce(),
    ) -> Vec<f64> {
        use monitor_common::tracked::{slot_shift, slot_word};
        let set_slot = |others: &mut [Other], slot: u64| {
            for (_, _, tids) in others {
                tids.set(slot_word(tid), slot << slot_shift(tid), 0)
                    .unwrap();
            }
        };
        if tracked {
            set_slot(self.others, 1);
            self.probes.track(tid).unwrap();
        }
        let start = self.sample();
        work();
        let end = self.sample();
        if tracked {
            set_slot(self.others, 0);
            self.probes.untrack(tid).unwrap();
        }
        round_row(round, scenario, &start, &end)
    }

    /// (run time ns, run count) of every program: empty, older builds, this build.
    fn sample(&self) -> Vec<(u64, u64)> {
        let mut v = vec![run_stats(self.empty.0, self.empty.1)];
        v.extend(
            self.others
                .iter()
                .map(|(_, ebpf, _)| run_stats(ebpf, self.program)),
        );
        v.push(pinsight_stats(self.probes, self.program));
        v
    }
}
