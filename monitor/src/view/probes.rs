//! The probes' side of the view: which probes run, their programs' run time and their
//! maps' fill, as the engine read them this tick.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A probe and whether it runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbeView {
    /// Attached to its kernel event.
    pub attached: bool,
    /// Where it is attached, or why it was skipped.
    pub detail: String,
}

/// A probe program's run-time figures (with kernel.bpf_stats_enabled=1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramView {
    /// Program name.
    pub program: String,
    /// Nanoseconds the kernel spent in it.
    pub run_time_ns: u64,
    /// Runs.
    pub run_count: u64,
}

/// A probe map's fill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapView {
    /// Map name.
    pub map: String,
    /// Entries in use.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
}

/// The probes' side of the view, as the engine read it this tick.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProbesView {
    /// Probe name -> state.
    pub probes: BTreeMap<String, ProbeView>,
    /// Per program, when bpf_stats is on.
    pub program_stats: Option<Vec<ProgramView>>,
    /// Per map.
    pub maps: Vec<MapView>,
    /// Failed map updates inside the probes.
    pub map_errors: u64,
    /// Switches of tracked threads the sched_switch tracepoint did not show.
    #[serde(default)]
    pub unseen_switches: u64,
    /// The depth filter in front of the probes' thread table.
    #[serde(default)]
    pub depth_filter: DepthFilterView,
}

/// The depth filter: which CPU cgroup depths sched_switch looks up in the thread table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DepthFilterView {
    /// True while every switch is looked up (at start, on a host where it cannot close, or
    /// while a thread that ran unseen has not been seen again).
    pub open: bool,
    /// The depths let through when closed (63 stands for 63 and deeper, modulo 64).
    pub depths: Vec<u32>,
    /// Whether it can close on this host at all.
    pub can_close: bool,
    /// Tracked threads found running unseen (their cgroup depth was not let through).
    pub threads_ran_unseen: u64,
}
