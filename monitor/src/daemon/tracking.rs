//! Keeps the probes' tracked threads in step with the inventory's QEMU threads: every vCPU
//! thread, and the other threads of the process (emulator, IOThreads, the rest), accounted by
//! role.
//!
//! A thread is known by its tid *and* its start time: a tid that the kernel hands to a new
//! vCPU thread before the next rescan (a VM restarted, pid_max wrapped) is a new thread, so
//! its slot is released (the old thread's last counters folded into the old VM) and taken
//! again with fresh counters. A vCPU that cannot be tracked (the maps are full) is reported
//! once, named in the view as not measured, and forgotten when its thread goes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::accounting::Accounting;
use crate::inventory::{Inventory, Vm};
use crate::probes::{ProbeError, Probes, ThreadCounters};
use crate::topology::Topology;

/// What tracking needs of the probes (the real ones, or a double in unit tests: a tid's
/// reuse cannot be provoked on a real host).
pub trait Tracker {
    /// Tracked tids.
    fn tracked(&self) -> &BTreeSet<u32>;
    /// Starts accounting `tid` with fresh counters: a vCPU thread when `vcpu`, else another
    /// QEMU thread (in its own pool of slots).
    fn track(&mut self, tid: u32, vcpu: bool) -> Result<(), ProbeError>;
    /// Stops accounting `tid`, returning its last counters.
    fn untrack(&mut self, tid: u32) -> Result<ThreadCounters, ProbeError>;
}

impl Tracker for Probes {
    fn tracked(&self) -> &BTreeSet<u32> {
        Probes::tracked(self)
    }
    fn track(&mut self, tid: u32, vcpu: bool) -> Result<(), ProbeError> {
        if vcpu {
            Probes::track(self, tid)
        } else {
            Probes::track_other(self, tid)
        }
    }
    fn untrack(&mut self, tid: u32) -> Result<ThreadCounters, ProbeError> {
        Probes::untrack(self, tid)
    }
}

/// The engine's record of which threads the probes account.
#[derive(Debug, Default)]
pub struct Tracking {
    /// Tracked tid -> the start time of the thread it was tracked for.
    started: HashMap<u32, u64>,
    /// vCPU threads that could not be tracked: tid -> why.
    unmeasured: BTreeMap<u32, String>,
}

impl Tracking {
    /// Tracks exactly the QEMU threads of `new`; `old` is the inventory they replace (the
    /// threads that went away are folded into their VMs there).
    pub fn sync(
        &mut self,
        probes: &mut impl Tracker,
        accounting: &mut Accounting,
        old: &[Vm],
        new: &Inventory,
        topology: &Topology,
    ) {
        // vCPUs and the other threads have slots of their own (probes.max_threads and
        // probes.max_other_threads): a host full of IOThreads never costs a vCPU its slot.
        let vcpus = new.vms.iter().flat_map(|vm| &vm.vcpus);
        let others = new.vms.iter().flat_map(|vm| &vm.threads);
        let order: Vec<(u32, u64, bool)> = vcpus
            .map(|t| (t.tid, t.start_time, true))
            .chain(others.map(|t| (t.tid, t.start_time, false)))
            .collect();
        let wanted: BTreeMap<u32, u64> = order.iter().map(|&(t, s, _)| (t, s)).collect();
        let stale: Vec<u32> = probes
            .tracked()
            .iter()
            .copied()
            // Gone, or the same tid for another thread.
            .filter(|tid| wanted.get(tid) != self.started.get(tid))
            .collect();
        for tid in stale {
            if wanted.contains_key(&tid) {
                tracing::info!(tid, "thread id reused by a new QEMU thread: fresh counters");
            }
            match probes.untrack(tid) {
                Ok(last) => accounting.retire(tid, &last, old, topology),
                Err(e) => tracing::warn!(tid, error = %e, "untracking thread failed"),
            }
            self.started.remove(&tid);
        }
        self.unmeasured.retain(|tid, _| wanted.contains_key(tid));
        for &(tid, start, vcpu) in &order {
            if probes.tracked().contains(&tid) {
                continue;
            }
            match probes.track(tid, vcpu) {
                Ok(()) => {
                    self.started.insert(tid, start);
                    self.unmeasured.remove(&tid);
                }
                Err(e) => {
                    let why = e.to_string();
                    // Once per thread, not per rescan: a full map stays full for a while.
                    if self.unmeasured.insert(tid, why.clone()).is_none() {
                        tracing::warn!(tid, error = %why, "cannot track QEMU thread: its run time is not measured");
                    }
                }
            }
        }
    }

    /// vCPU threads the probes do not account, by tid.
    pub fn unmeasured(&self) -> impl Iterator<Item = u32> + '_ {
        self.unmeasured.keys().copied()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::test_support::{topo, VmBuilder};

    /// Probes that track up to `capacity` threads and log every call.
    #[derive(Default)]
    struct FakeProbes {
        tracked: BTreeSet<u32>,
        capacity: usize,
        calls: Vec<String>,
    }

    impl Tracker for FakeProbes {
        fn tracked(&self) -> &BTreeSet<u32> {
            &self.tracked
        }
        fn track(&mut self, tid: u32, _vcpu: bool) -> Result<(), ProbeError> {
            self.calls.push(format!("track {tid}"));
            if self.tracked.len() >= self.capacity {
                return Err(ProbeError::Full {
                    tid,
                    capacity: self.capacity as u32,
                    key: "probes.max_threads",
                });
            }
            self.tracked.insert(tid);
            Ok(())
        }
        fn untrack(&mut self, tid: u32) -> Result<ThreadCounters, ProbeError> {
            self.calls.push(format!("untrack {tid}"));
            self.tracked.remove(&tid);
            Ok(ThreadCounters::default())
        }
    }

    fn inventory(vms: Vec<Vm>) -> Inventory {
        Inventory {
            vms,
            problems: Vec::new(),
        }
    }

    #[test]
    fn a_reused_tid_gets_fresh_counters_and_a_full_map_is_named_then_forgotten() {
        let topology = topo("two-socket-gpu");
        let mut accounting = Accounting::new(Duration::from_secs(60), None);
        let mut probes = FakeProbes {
            capacity: 1,
            ..Default::default()
        };
        let mut tracking = Tracking::default();
        let first = inventory(vec![VmBuilder::new("a").vcpus(&["0", "1"]).build()]);
        tracking.sync(&mut probes, &mut accounting, &[], &first, &topology);
        // tid 100 fits, tid 101 does not: it is unmeasured, not silently 0.
        assert_eq!(probes.calls, ["track 100", "track 101"]);
        assert_eq!(tracking.unmeasured().collect::<Vec<_>>(), [101]);

        // Same threads again: nothing to do, and the full map is not retried noisily.
        probes.calls.clear();
        tracking.sync(&mut probes, &mut accounting, &first.vms, &first, &topology);
        assert_eq!(probes.calls, ["track 101"]);

        // VM a is gone and VM b's vCPU 0 got tid 100 back with another start time: the old
        // slot is released and taken again, so b never inherits a's counters.
        let mut second = VmBuilder::new("b").vcpus(&["1"]).build();
        second.vcpus[0].start_time = 2;
        let second = inventory(vec![second]);
        probes.calls.clear();
        tracking.sync(&mut probes, &mut accounting, &first.vms, &second, &topology);
        assert_eq!(probes.calls, ["untrack 100", "track 100"]);
        assert_eq!(
            tracking.unmeasured().count(),
            0,
            "tid 101 is gone: forgotten"
        );
    }
}
