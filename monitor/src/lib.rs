//! pinsight: sees, explains and fixes GPU VMs whose vCPUs run on the wrong socket.
//!
//! Data flows one way: `topology` (sysfs), `inventory` (libvirt, /proc) and `probes` (eBPF
//! maps) are the sources; `accounting` turns their readings into per-VM figures; the engine
//! (`daemon`) builds one [`view::HostView`] per tick from them, lets `policy` decide from it
//! (`remediate` acts through libvirt in enforce mode) and publishes it; `metrics`, `http` and
//! the `cli` renderers only read that view. `lifecycle` hears libvirt's domain events.

pub mod accounting;
pub mod calibration;
pub mod cgroupfs;
pub mod cli;
pub mod config;
pub mod cpuset;
pub mod daemon;
pub mod fatal;
pub mod http;
pub mod interrupts;
pub mod inventory;
pub mod irqbalance;
pub mod lifecycle;
pub mod lock;
pub mod memory;
pub mod metrics;
pub mod policy;
pub mod privilege;
pub mod probes;
pub mod remediate;
pub mod topology;
pub mod view;

#[cfg(test)]
mod test_support;
