//! The slowly changing part of a VM's placement, read every `placement_read_seconds` rather
//! than every tick: each VM's memory by node (its cgroups' stat files) and its GPUs'
//! interrupt lines (/proc/interrupts and their affinity). At 100 VMs the memory files alone
//! were a fifth of the daemon's CPU when read every tick (BENCHMARKS.md), and neither moves
//! faster than an operator or a fix can act on it. (The vCPUs' allowed CPUs, which the repin
//! policy acts on, are still read every tick.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::interrupts::VfioInterrupts;
use crate::inventory::Inventory;
use crate::memory::{MemoryReader, Resident};

/// When the next reading is due.
#[derive(Debug, Clone, Copy)]
pub struct Cadence {
    last: Option<Instant>,
}

impl Cadence {
    /// Due at the first tick.
    pub fn new() -> Self {
        Cadence { last: None }
    }

    /// Whether a reading is due at `now`, readings coming every `every` on ticks of `tick`.
    /// Half a tick early rather than a tick late: ticks never start exactly on time, and a
    /// reading due at 5 s must not slip to the tick at 6 s.
    pub fn due(&self, now: Instant, every: Duration, tick: Duration) -> bool {
        self.last
            .is_none_or(|t| now.saturating_duration_since(t) + tick / 2 >= every)
    }

    /// A reading was taken at `now`.
    pub fn read_at(&mut self, now: Instant) {
        self.last = Some(now);
    }
}

/// The last readings of memory and interrupts, and why any could not be taken.
#[derive(Debug, Default)]
pub struct Placement {
    /// The GPUs' interrupt lines as last read.
    pub interrupts: VfioInterrupts,
    /// Why they could not be read, if they could not.
    interrupts_problem: Option<String>,
    /// Each VM's memory by node as last read, by domain name.
    pub memory: BTreeMap<String, Resident>,
    /// The VMs whose memory could not be read, one line each.
    memory_problems: Vec<String>,
    /// VMs whose hugetlb pages on nodes unknown were logged (once per VM while they last).
    hugetlb_unknown_logged: BTreeSet<String>,
    reader: MemoryReader,
}

impl Placement {
    /// Nothing read yet; the numa_maps fallback at most every `fallback` (None: off).
    pub fn new(fallback: Option<Duration>) -> Self {
        Placement {
            reader: MemoryReader::new(fallback),
            ..Default::default()
        }
    }

    /// A reloaded numa_maps fallback interval.
    pub fn set_fallback(&mut self, fallback: Option<Duration>) {
        self.reader.set_fallback(fallback);
    }

    /// Problem lines for the view: what could not be read at the last reading.
    pub fn problems(&self) -> impl Iterator<Item = String> + '_ {
        self.interrupts_problem
            .iter()
            .chain(&self.memory_problems)
            .cloned()
    }

    /// Reads the interrupts of `inventory`'s GPUs and each of its VMs' memory.
    pub fn read(&mut self, inventory: &Inventory, irq_proc_root: &Path, roots: MemoryRoots) {
        self.read_interrupts(inventory, irq_proc_root);
        self.read_memory(inventory, roots);
    }

    /// The GPUs' interrupt lines (one read of /proc/interrupts, and each vfio line's
    /// affinity); a failure is a problem line, logged when it starts.
    fn read_interrupts(&mut self, inventory: &Inventory, irq_proc_root: &Path) {
        // Only GPUs' lines are of interest: without a GPU VM, /proc/interrupts (a line per
        // IRQ, a column per CPU) is not read at all.
        if inventory.vms.iter().all(|vm| vm.gpus.is_empty()) {
            self.interrupts = Default::default();
            self.interrupts_problem = None;
            return;
        }
        match crate::interrupts::read(irq_proc_root) {
            Ok(found) => {
                self.interrupts = found;
                self.interrupts_problem = None;
            }
            Err(e) => {
                let problem = format!("GPU interrupts not read: {e}");
                if self.interrupts_problem.as_ref() != Some(&problem) {
                    tracing::warn!("{problem}");
                }
                self.interrupts = Default::default();
                self.interrupts_problem = Some(problem);
            }
        }
    }

    /// Each VM's memory by node from its cgroups (a few small reads per VM), or numa_maps now
    /// and then for a VM without them. A VM that stopped since the scan simply has none;
    /// other failures are problem lines.
    fn read_memory(&mut self, inventory: &Inventory, roots: MemoryRoots) {
        self.memory.clear();
        self.memory_problems.clear();
        let vms = &inventory.vms;
        self.reader.retain(|pid| vms.iter().any(|vm| vm.pid == pid));
        self.hugetlb_unknown_logged
            .retain(|name| vms.iter().any(|vm| &vm.name == name));
        let now = Instant::now();
        for vm in vms {
            match self.reader.read(roots.proc, roots.cgroup, vm.pid, now) {
                Ok(bytes) => {
                    self.log_hugetlb_unknown(&vm.name, bytes.hugetlb_node_unknown);
                    self.memory.insert(vm.name.clone(), bytes);
                }
                Err(e) => {
                    tracing::debug!(domain = %vm.name, error = %e, "memory by node not read");
                    self.memory_problems
                        .push(format!("domain {}: memory by node not read: {e}", vm.name));
                }
            }
        }
    }

    /// Says once per VM that its hugetlb pages are on nodes unknown, and how to see them.
    fn log_hugetlb_unknown(&mut self, domain: &str, bytes: u64) {
        if bytes == 0 {
            self.hugetlb_unknown_logged.remove(domain);
        } else if self.hugetlb_unknown_logged.insert(domain.to_string()) {
            tracing::warn!(
                domain,
                hugetlb_mib = bytes >> 20,
                "the VM's hugetlb pages are in no hugetlb cgroup pinsight can read, so its memory \
                 by node leaves them out (pinsight_domain_memory_hugetlb_node_unknown_bytes): \
                 enable the hugetlb controller where libvirt puts VMs, or set \
                 numa_maps_fallback_seconds to place them from the VM's numa_maps"
            );
        }
    }
}

/// Where a VM's memory figures are read from.
#[derive(Debug, Clone, Copy)]
pub struct MemoryRoots<'a> {
    /// /proc (a QEMU process's cgroup file, and numa_maps).
    pub proc: &'a Path,
    /// Where the cgroup hierarchies are mounted.
    pub cgroup: &'a Path,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: Duration = Duration::from_secs(1);
    const EVERY: Duration = Duration::from_secs(5);

    #[test]
    fn the_first_tick_reads_then_every_five_seconds_of_one_second_ticks() {
        let start = Instant::now();
        let mut cadence = Cadence::new();
        let mut read = Vec::new();
        for tick in 0..16u64 {
            let now = start + TICK * tick as u32;
            if cadence.due(now, EVERY, TICK) {
                cadence.read_at(now);
                read.push(tick);
            }
        }
        assert_eq!(read, vec![0, 5, 10, 15]);
    }

    #[test]
    fn a_tick_that_starts_a_little_early_or_late_does_not_slip_a_whole_tick() {
        let start = Instant::now();
        let mut cadence = Cadence::new();
        cadence.read_at(start);
        let ms = Duration::from_millis;
        // 4.97 s after: due (half a tick of slack); 4.4 s: not yet.
        assert!(cadence.due(start + ms(4970), EVERY, TICK));
        assert!(!cadence.due(start + ms(4400), EVERY, TICK));
        // Late by 30 ms: due, and the next one counts from when it was really read.
        cadence.read_at(start + ms(5030));
        assert!(!cadence.due(start + ms(6000), EVERY, TICK));
        assert!(cadence.due(start + ms(10_000), EVERY, TICK));
    }

    #[test]
    fn an_interval_shorter_than_a_tick_reads_every_tick() {
        let start = Instant::now();
        let mut cadence = Cadence::new();
        cadence.read_at(start);
        let every = Duration::from_millis(50);
        assert!(cadence.due(start + TICK, every, TICK));
    }

    #[test]
    fn a_clock_that_seems_to_go_back_is_not_a_panic_and_not_due() {
        let start = Instant::now() + Duration::from_secs(10);
        let mut cadence = Cadence::new();
        cadence.read_at(start);
        assert!(!cadence.due(start - TICK, EVERY, TICK));
    }
}
