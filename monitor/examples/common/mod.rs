//! What the probe cost benchmarks share: the eBPF objects of other builds to compare with.

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
