//! Reading every source in one place, once a tick: the libvirt and QMP inventories when a
//! scan has come (and the tracked threads kept in step with them), the vCPUs' allowed CPUs,
//! memory by node and GPU interrupts when due, and the probes' counters.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::{placement, release_free_heap, Engine};
use crate::inventory::Inventory;
use crate::lifecycle::Lifecycle;
use crate::probes::ThreadCounters;

impl Engine {
    /// Every source, read in one place: the libvirt inventory when a scan asked for earlier
    /// has come (asking for the next when one is due or a domain event wants it); each vCPU
    /// thread's allowed CPUs; when due, the GPUs' interrupts and each VM's memory; then the
    /// probes. Nothing here waits for libvirt.
    pub(super) fn read_sources(&mut self, now: Instant) -> BTreeMap<u32, ThreadCounters> {
        self.rescan_wanted |= self.lifecycle.as_ref().is_some_and(Lifecycle::take);
        // With events, the periodic scan is a safety net; without, it is how changes are seen.
        let rescan = match self.lifecycle.as_ref().is_some_and(Lifecycle::connected) {
            true => self.config.rescan(),
            false => self.config.eventless_rescan(),
        };
        let due = self
            .last_scan
            .is_none_or(|t| now.duration_since(t) >= rescan);
        if (due || self.rescan_wanted) && !self.libvirt.scanning() {
            let grace = Duration::from_secs_f64(self.config.tick_seconds / 4.0).min(SCAN_GRACE);
            self.libvirt.start_scan(&self.topology, &self.paths, grace);
            self.last_scan = Some(now);
            self.rescan_wanted = false;
        }
        let libvirt = self.libvirt.poll(now);
        let qmp = self.qmp.take();
        let new_inventory = libvirt.is_some() || qmp.is_some();
        if new_inventory {
            // Each source keeps its last answer: a host without libvirt still sees its
            // QEMU VMs, and a hung QMP socket never holds back libvirt's.
            if let Some(i) = libvirt {
                self.libvirt_inventory = i;
                // A scan allocates and frees much (every domain's XML, its parse, /proc
                // reads). Once a rescan: cheap.
                release_free_heap();
            }
            if let Some(i) = qmp {
                self.qmp_inventory = i;
            }
            let mut inventory = self.libvirt_inventory.clone();
            crate::inventory::qmp::merge(self.qmp_inventory.clone(), &mut inventory);
            self.log_changes(&inventory);
            self.sync_tracking(inventory);
        } else {
            // vCPU pins are what the policy acts on: read every tick (one sched_getaffinity
            // per vCPU; a new inventory has just read them), so a pin changed behind
            // libvirt's back is seen within a tick.
            self.inventory.refresh_affinity();
        }
        // Memory and interrupt lines change slowly: read them every placement_read_seconds,
        // and at once for a new inventory.
        let tick = Duration::from_secs_f64(self.config.tick_seconds);
        if new_inventory
            || self
                .placement_cadence
                .due(now, self.config.placement_read(), tick)
        {
            let roots = placement::MemoryRoots {
                proc: &self.paths.proc_root,
                cgroup: &self.config.cgroup_root,
            };
            self.placement
                .read(&self.inventory, &self.config.irq_proc_root, roots);
            self.placement_cadence.read_at(now);
        }
        match &self.probes {
            Some(p) => p.read().unwrap_or_else(|e| {
                tracing::warn!(error = %e, "reading probe maps failed");
                BTreeMap::new()
            }),
            None => BTreeMap::new(),
        }
    }

    fn log_changes(&mut self, new: &Inventory) {
        let old: BTreeSet<&str> = self.inventory.vms.iter().map(|v| v.name.as_str()).collect();
        for vm in &new.vms {
            if !old.contains(vm.name.as_str()) {
                tracing::info!(domain = %vm.name, vcpus = vm.vcpus.len(), gpus = ?vm.gpus.iter().map(|g| &g.address).collect::<Vec<_>>(), gpu_nodes = ?vm.gpu_nodes, "VM found");
            }
        }
        let new_names: BTreeSet<&str> = new.vms.iter().map(|v| v.name.as_str()).collect();
        for gone in old.difference(&new_names) {
            tracing::info!(domain = %gone, "VM gone");
        }
        for problem in &new.problems {
            if self.reported.insert(problem.clone()) {
                tracing::warn!("{problem}");
            }
        }
        let cap = self.config.max_exported_vms as usize;
        if new.vms.len() > cap && self.inventory.vms.len() <= cap {
            tracing::warn!(
                vms = new.vms.len(),
                max_exported_vms = cap,
                "more VMs than max_exported_vms: the per-VM metric families show the first {cap} by name (pinsight_domains_not_exported counts the rest); status and the policy see all"
            );
        }
        // A problem that went away is logged again if it comes back.
        self.reported.retain(|p| new.problems.contains(p));
    }

    /// Tracks exactly the vCPU threads of `inventory`, then makes it the current one.
    fn sync_tracking(&mut self, inventory: Inventory) {
        if let Some(probes) = self.probes.as_mut() {
            self.tracking.sync(
                probes,
                &mut self.accounting,
                &self.inventory.vms,
                &inventory,
                &self.topology,
            );
        }
        self.inventory = inventory;
    }
}

/// The most a tick waits for a scan it asked for (a quarter tick at most): a healthy libvirt
/// answers in milliseconds, and a hung one costs a tick no more than this.
const SCAN_GRACE: Duration = Duration::from_millis(250);
