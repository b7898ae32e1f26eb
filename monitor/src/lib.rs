//! pinsight: sees, explains and fixes GPU VMs whose vCPUs run on the wrong socket.

pub mod cpuset;
pub mod probes;
