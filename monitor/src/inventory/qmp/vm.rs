//! One socket's answer as a [`Vm`]: what the socket said, completed from /proc (threads by
//! name, `-name`/`-uuid` from the command line) and the operator's `[qmp.gpus]` table, and
//! a problem line saying what is still missing. A process without any vCPU thread found is
//! no VM: only its problem line is kept.

use std::collections::BTreeMap;
use std::path::Path;

use super::{peer, Answer, ControlSocket};
use crate::config::QmpConfig;
use crate::inventory::domain_xml::{DomainSpec, GpuRef};
use crate::inventory::{resolve_gpus, threads, HostPaths, VcpuThread, Vm};
use crate::topology::Topology;

/// A VM (None: no process behind the socket, or it exited mid-scan) and the problem lines.
pub struct Found {
    /// The VM.
    pub vm: Option<Vm>,
    /// What could not be read, naming the socket.
    pub problems: Vec<String>,
}

/// Builds the VM behind `socket` from its `answer`.
pub fn build(
    source: &dyn ControlSocket,
    socket: &Path,
    answer: Answer,
    config: &QmpConfig,
    topology: &Topology,
    paths: &HostPaths,
) -> Found {
    let mut found = Found {
        vm: None,
        problems: Vec::new(),
    };
    let failure = answer.failure.clone();
    let Some(pid) = answer.pid else {
        if !answer.gone {
            let why = failure.unwrap_or_else(|| format!("QMP socket {}", socket.display()));
            found.problems.push(format!(
                "{why}; no process listens on it, so no VM (a stale socket of an exited QEMU?)"
            ));
        }
        return found;
    };
    let proc = &paths.proc_root;
    // The process is gone: it exited between the conversation and now. Not a problem.
    let Some(cmdline) = peer::command_line(proc, pid) else {
        return found;
    };
    let mut missing = Vec::new();
    let mut learnt = Vec::new();
    let name = match answer.name.clone() {
        Some(n) => n,
        None => match cmdline.name {
            Some(n) => {
                learnt.push("name from the command line");
                n
            }
            None => {
                missing.push(format!("name (called qemu-{pid})"));
                format!("qemu-{pid}")
            }
        },
    };
    let uuid = match answer.uuid.clone().or_else(|| {
        let u = cmdline.uuid.clone()?;
        learnt.push("UUID from the command line");
        Some(u)
    }) {
        Some(u) => u,
        None => {
            missing.push("UUID".to_string());
            String::new()
        }
    };
    let vcpus = match &answer.vcpus {
        Some(list) => match vcpus_by_tid(proc, pid, list) {
            Some(v) => v,
            None => return found,
        },
        None => match source.vcpus_by_name(proc, pid) {
            Ok(v) if v.is_empty() => {
                missing.push(format!(
                    "vCPU threads (none named {})",
                    source.vcpu_thread_names()
                ));
                v
            }
            Ok(v) => {
                learnt.push("vCPU threads by their names");
                v
            }
            // The process exited while its threads were read.
            Err(_) => return found,
        },
    };
    let declared = declared_gpus(&config.gpus, &name, pid);
    let mut gpus: Vec<GpuRef> = Vec::new();
    match &answer.gpus {
        Some(list) => gpus.extend(list.iter().map(|a| GpuRef::Pci { address: a.clone() })),
        None if declared.is_empty() => {
            missing.push("GPUs (declare them in [qmp.gpus] by VM name or pid file)".into())
        }
        None => learnt.push("GPUs from [qmp.gpus]"),
    }
    for address in declared {
        if !gpus
            .iter()
            .any(|g| matches!(g, GpuRef::Pci { address: a } if *a == address))
        {
            gpus.push(GpuRef::Declared { address });
        }
    }
    if failure.is_some() || !missing.is_empty() || !answer.notes.is_empty() {
        let mut line = failure.unwrap_or_else(|| format!("QMP socket {}", socket.display()));
        line.push_str(&format!("; VM {name} (QEMU pid {pid})"));
        if !learnt.is_empty() {
            line.push_str(&format!(": found {}", learnt.join(", ")));
        }
        if !missing.is_empty() {
            line.push_str(&format!("; missing: {}", missing.join(", ")));
        }
        for note in &answer.notes {
            line.push_str(&format!("; {note}"));
        }
        found.problems.push(line);
    }
    // Nothing to measure (a socket of some other program, or a QEMU whose threads say
    // nothing): the problem line is all there is to say.
    if vcpus.is_empty() {
        return found;
    }
    let (state, state_record) = recorded(config, proc, &name, &uuid, pid, &mut found.problems);
    let spec = DomainSpec {
        name: name.clone(),
        uuid: uuid.clone(),
        vcpus: vcpus.len() as u32,
        gpus,
        state,
        state_record,
        ..DomainSpec::default()
    };
    let gpus = resolve_gpus(&spec, topology, &paths.sysfs_root, &mut found.problems);
    let mut gpu_nodes: Vec<u32> = gpus.iter().filter_map(|g| g.node).collect();
    gpu_nodes.sort_unstable();
    gpu_nodes.dedup();
    let threads = crate::inventory::threads::host_threads(&paths.proc_root, pid, &vcpus);
    found.vm = Some(Vm {
        name,
        uuid,
        pid,
        vcpus,
        threads,
        gpus,
        gpu_nodes,
        spec,
        vmm: source.vmm(),
    });
    found
}

/// pinsight's record of this VM from its state file under `[qmp] state_dir` (the XML text
/// the policy keys on and the record), as a libvirt domain's metadata gives them. A file of
/// another process (an exited QEMU) is stale and ignored (the daemon removes it); one that
/// cannot be used is a problem line naming it, and an error record, so the VM is not moved.
type State = (
    Option<String>,
    Option<Result<crate::policy::record::Record, crate::policy::record::RecordError>>,
);

fn recorded(
    config: &QmpConfig,
    proc: &Path,
    name: &str,
    uuid: &str,
    pid: u32,
    problems: &mut Vec<String>,
) -> State {
    use crate::remediate::state_file;
    let Some(start) = state_file::process_start(proc, pid) else {
        return (None, None);
    };
    let path = state_file::path_of(&config.state_dir, name, uuid, pid, start);
    match state_file::read(&path) {
        Ok(Some(f)) if f.pid == pid && f.start_time == start => {
            (Some(f.record.to_xml()), Some(Ok(f.record)))
        }
        Ok(_) => (None, None),
        Err(e) => {
            let reason = e.to_string();
            problems.push(format!("VM {name} (QEMU pid {pid}): {reason}"));
            (
                Some(reason.clone()),
                Some(Err(crate::policy::record::RecordError { reason })),
            )
        }
    }
}

/// The vCPU threads QMP named, read from /proc/PID/task (so a tid that is not the
/// process's own is not taken); None when the process is gone.
fn vcpus_by_tid(proc_root: &Path, pid: u32, list: &[(u32, u32)]) -> Option<Vec<VcpuThread>> {
    let tasks = proc_root.join(pid.to_string()).join("task");
    let mut vcpus = Vec::new();
    for &(vcpu, tid) in list {
        let task = tasks.join(tid.to_string());
        match threads::allowed_cpus(&task) {
            Ok(allowed_cpus) => vcpus.push(VcpuThread {
                vcpu,
                tid,
                allowed_cpus,
                start_time: threads::start_time(&task).unwrap_or(0),
            }),
            // One thread gone: skip it; the whole process gone: no VM.
            Err(_) if !tasks.exists() => return None,
            Err(_) => {}
        }
    }
    vcpus.sort_by_key(|v| v.vcpu);
    Some(vcpus)
}

/// The operator's GPUs for VM `name` or for the pid file that holds `pid`.
pub(super) fn declared_gpus(
    table: &BTreeMap<String, Vec<String>>,
    name: &str,
    pid: u32,
) -> Vec<String> {
    let mut out = Vec::new();
    for (key, addresses) in table {
        let by_pid_file = key.starts_with('/')
            && std::fs::read_to_string(key)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                == Some(pid);
        if key == name || by_pid_file {
            for a in addresses {
                if let Some(a) = crate::topology::normalize_pci_address(a) {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
        }
    }
    out
}
