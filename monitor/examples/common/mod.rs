//! What the probe cost benchmarks share: the eBPF objects of other builds to compare with, the
//! median and spread of a series, and (from the root tests' helpers) this process's threads
//! and CPU cgroups.

/// Thread ids, run-time clock, CPU cgroups: the root tests' own helpers.
#[allow(dead_code)]
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
