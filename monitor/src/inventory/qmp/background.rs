//! The scan on a thread of its own, every `rescan` seconds, keeping the newest result: so a
//! QMP socket that hangs costs that thread its deadline and never a tick of the engine.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::scan;
use crate::config::QmpConfig;
use crate::inventory::{HostPaths, Inventory};
use crate::topology::Topology;

/// A scanning thread; stops when dropped.
pub struct Background {
    latest: Arc<Mutex<Option<Inventory>>>,
    stop: Arc<AtomicBool>,
}

impl Background {
    /// Starts scanning now and then every `rescan`.
    pub fn start(
        config: QmpConfig,
        topology: Topology,
        paths: HostPaths,
        rescan: Duration,
    ) -> Background {
        let latest = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, stopped) = (latest.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("qmp-scan".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    let inventory = scan(&config, &topology, &paths);
                    if let Ok(mut slot) = out.lock() {
                        *slot = Some(inventory);
                    }
                    std::thread::sleep(rescan);
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the QMP scan thread: QEMU VMs without libvirt are not seen");
        }
        Background { latest, stop }
    }

    /// The newest scan's result (empty before the first).
    pub fn latest(&self) -> Inventory {
        self.latest
            .lock()
            .map(|l| l.clone().unwrap_or_default())
            .unwrap_or_default()
    }

    /// Adds the newest QMP VMs and problems to a libvirt `inventory` (see [`merge`]).
    pub fn merge_into(&self, inventory: &mut Inventory) {
        merge(self.latest(), inventory);
    }
}

/// Adds `qmp`'s VMs and problems to `inventory`; a QEMU VM whose name a libvirt domain has
/// is left out (with a problem line) so every name stays one VM.
pub fn merge(qmp: Inventory, inventory: &mut Inventory) {
    inventory.problems.extend(qmp.problems);
    for vm in qmp.vms {
        if inventory.vms.iter().any(|v| v.name == vm.name) {
            inventory.problems.push(format!(
                "QEMU VM {} (pid {}) found by QMP has the name of a libvirt domain: left out",
                vm.name, vm.pid
            ));
            continue;
        }
        inventory.vms.push(vm);
    }
    inventory.vms.sort_by(|a, b| a.name.cmp(&b.name));
}

impl Drop for Background {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
