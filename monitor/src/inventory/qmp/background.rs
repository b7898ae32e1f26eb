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
    /// The newest scan, until the engine takes it.
    latest: Arc<Mutex<Option<Inventory>>>,
    /// What the next scan uses (a reload changes it).
    settings: Arc<Mutex<(QmpConfig, Duration)>>,
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
        let settings = Arc::new(Mutex::new((config, rescan)));
        let stop = Arc::new(AtomicBool::new(false));
        let (out, stopped, current) = (latest.clone(), stop.clone(), settings.clone());
        let spawned = std::thread::Builder::new()
            .name("qmp-scan".into())
            .spawn(move || {
                // A dying scan thread is a dying process, not VMs silently unseen.
                crate::fatal::exit_on_panic("the QMP scan thread", || {
                    while !stopped.load(Ordering::Relaxed) {
                        let (config, rescan) = current
                            .lock()
                            .map(|s| s.clone())
                            .unwrap_or_else(|p| p.into_inner().clone());
                        let inventory = scan(&config, &topology, &paths);
                        if let Ok(mut slot) = out.lock() {
                            *slot = Some(inventory);
                        }
                        std::thread::sleep(rescan);
                    }
                })
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the QMP scan thread: QEMU VMs without libvirt are not seen");
        }
        Background {
            latest,
            settings,
            stop,
        }
    }

    /// A scan that completed since the last call, if one did.
    pub fn take(&self) -> Option<Inventory> {
        self.latest.lock().ok()?.take()
    }

    /// Uses `config` and `rescan` from the next scan on (a reload).
    pub fn reconfigure(&self, config: QmpConfig, rescan: Duration) {
        if let Ok(mut s) = self.settings.lock() {
            *s = (config, rescan);
        }
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
