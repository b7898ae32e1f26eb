use super::*;

fn pair(from: u32, to: u32, latency_ns: f64, bw: f64) -> PairFigures {
    PairFigures {
        from,
        to,
        latency_ns,
        bandwidth_bytes_per_second: bw,
    }
}

fn two_nodes() -> Calibration {
    Calibration {
        version: VERSION,
        measured_unix_seconds: 1.0,
        buffer_bytes: 1 << 28,
        pairs: vec![
            pair(0, 0, 90.0, 20e9),
            pair(0, 1, 144.0, 12e9),
            pair(1, 1, 100.0, 18e9),
            pair(1, 0, 150.0, 9e9),
        ],
    }
}

#[test]
fn ratios_are_to_the_measuring_threads_own_node() {
    let r = two_nodes().ratios();
    let find = |from, to| *r.iter().find(|p| p.from == from && p.to == to).unwrap();
    assert_eq!(find(0, 0).latency_ratio, 1.0);
    assert_eq!(find(0, 1).latency_ratio, 1.6);
    assert_eq!(find(0, 1).bandwidth_ratio, 0.6);
    assert_eq!(find(1, 0).latency_ratio, 1.5);
    assert_eq!(find(1, 0).bandwidth_ratio, 0.5);
}

#[test]
fn a_pair_without_its_own_node_measured_has_no_ratio() {
    let mut c = two_nodes();
    c.pairs.retain(|p| (p.from, p.to) != (1, 1));
    assert!(c.ratios().iter().all(|p| p.from == 0));
}

#[test]
fn the_file_round_trips_and_a_missing_one_is_no_calibration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/calibration.json");
    assert!(Calibration::read(&path).unwrap().is_none());
    two_nodes().write(&path).unwrap();
    assert_eq!(Calibration::read(&path).unwrap(), Some(two_nodes()));
}

#[test]
fn bad_files_are_errors_naming_the_file_and_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("calibration.json");
    let mut bad = two_nodes();
    bad.pairs[1].latency_ns = f64::NAN;
    std::fs::write(
        &path,
        serde_json::to_string(&bad).unwrap().replace("NaN", "null"),
    )
    .unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("{\"version\": 1".into(), "EOF"),
        (
            serde_json::to_string(&Calibration {
                version: 7,
                ..two_nodes()
            })
            .unwrap(),
            "version 7",
        ),
        (
            serde_json::to_string(&Calibration {
                pairs: vec![pair(0, 0, -1.0, 1.0)],
                ..two_nodes()
            })
            .unwrap(),
            "pair 0 -> 0: latency_ns -1 is not a positive number",
        ),
        (
            serde_json::to_string(&Calibration {
                pairs: vec![pair(0, 5000, 1.0, 1.0)],
                ..two_nodes()
            })
            .unwrap(),
            "node ids must be below 1024",
        ),
        (
            serde_json::to_string(&Calibration {
                pairs: vec![pair(0, 0, 1.0, 1.0), pair(0, 0, 2.0, 1.0)],
                ..two_nodes()
            })
            .unwrap(),
            "pair 0 -> 0 is listed twice",
        ),
        (
            "x".repeat(MAX_FILE_BYTES as usize + 1),
            "more than the limit",
        ),
    ];
    for (text, wrong) in cases {
        std::fs::write(&path, &text).unwrap();
        let err = Calibration::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("calibration.json") && err.contains(wrong),
            "{err}"
        );
    }
}
