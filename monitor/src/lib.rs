//! pinsight: sees, explains and fixes GPU VMs whose vCPUs run on the wrong socket.
//!
//! Data flows one way: `topology` (sysfs) and `inventory` (libvirt, /proc) and `probes`
//! (eBPF maps) are the sources; `accounting` turns their readings into per-VM figures;
//! `metrics`, `status` and `http` show them; `policy` decides where misplaced vCPUs go,
//! `remediate` repins them through libvirt, `lifecycle` hears libvirt's domain events;
//! `daemon` runs the loop.

pub mod accounting;
pub mod cli;
pub mod config;
pub mod cpuset;
pub mod daemon;
pub mod http;
pub mod inventory;
pub mod lifecycle;
pub mod metrics;
pub mod policy;
pub mod probes;
pub mod remediate;
pub mod topology;
pub mod view;

#[cfg(test)]
mod test_support;
