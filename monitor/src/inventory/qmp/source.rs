//! Which VMM runs a VM, and what a VMM's control socket must tell pinsight. QMP is the one
//! source today; Cloud Hypervisor's API socket (`vm.info`, vCPU threads named `vcpuN`)
//! would be a second [`ControlSocket`] filling the same [`Answer`], without changes to the
//! scan. It is not packaged here, so it could not be tested, and has no code yet.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::inventory::{ThreadsError, VcpuThread};

/// The VMM behind a VM, as the `vmm` label of `pinsight_domain_info` says it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vmm {
    /// A libvirt domain (QEMU under libvirtd).
    #[default]
    Libvirt,
    /// A QEMU process without libvirt, found through its QMP socket.
    Qemu,
}

impl Vmm {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Vmm::Libvirt => "libvirt",
            Vmm::Qemu => "qemu",
        }
    }
}

/// What one conversation with a control socket gave. Every fact is optional: a socket that
/// cannot be used still has a process behind it whose threads can be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The VMM process listening on the socket; None: nobody (a stale socket).
    pub pid: Option<u32>,
    /// The VM's name.
    pub name: Option<String>,
    /// The VM's UUID.
    pub uuid: Option<String>,
    /// (vCPU index, host thread id) of each vCPU.
    pub vcpus: Option<Vec<(u32, u32)>>,
    /// Host PCI addresses of passed-through devices.
    pub gpus: Option<Vec<String>>,
    /// Facts the socket could not give although the conversation went on.
    pub notes: Vec<String>,
    /// Why the conversation failed (it names the socket); None when it worked.
    pub failure: Option<String>,
    /// Whether the socket's file is gone (its VMM exited cleanly mid-scan).
    pub gone: bool,
}

/// A kind of VMM control socket.
pub trait ControlSocket: Sync {
    /// The VMM it speaks for.
    fn vmm(&self) -> Vmm;
    /// Asks the socket all it can by `deadline` (a `budget` long), holding it no longer.
    fn ask(&self, socket: &Path, proc_root: &Path, deadline: Instant, budget: Duration) -> Answer;
    /// The vCPU threads of `pid` found by their names, for when the socket cannot say.
    fn vcpus_by_name(&self, proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>, ThreadsError>;
    /// How its vCPU threads are named, for a problem line when none is found.
    fn vcpu_thread_names(&self) -> &'static str;
}
