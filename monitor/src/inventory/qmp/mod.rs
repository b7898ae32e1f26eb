//! QEMU processes without libvirt (Kata Containers, in-house orchestrators), found through
//! their QMP sockets: the configured globs are expanded, each socket is asked (in parallel,
//! each within `[qmp] timeout_seconds` and held no longer) for the VM's name, UUID, vCPU
//! thread ids and vfio-pci devices, and the answers become [`Vm`]s like libvirt's.
//!
//! QEMU serves one QMP client at a time and an orchestrator may hold the socket for good.
//! The process behind the socket is still known (SO_PEERCRED, or /proc/net/unix when even
//! connect is refused for a full backlog), so its vCPU threads are read by their names and
//! its name and UUID from its command line; a problem line names the socket, why it could
//! not be used and which facts are missing. A QEMU that exits mid-scan is simply not listed.

mod background;
mod client;
mod glob;
mod peer;
pub mod reply;
mod source;
mod vm;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

use super::{HostPaths, Inventory, ThreadsError, VcpuThread};
use crate::config::QmpConfig;
use crate::topology::Topology;
pub use background::{merge, Background};
pub use client::QmpError;
use reply::{CpuInfoFast, NameInfo, QomProperty, UuidInfo, VFIO_PCI_CHILD};
pub use source::{Answer, ControlSocket, Vmm};

/// Most sockets asked at once: a scan of many hung sockets costs a few deadlines, not one
/// thread per socket.
const MAX_PARALLEL: usize = 32;

/// QEMU's monitor protocol.
pub struct Qmp;

/// The QEMU VMs behind the sockets `config` names, and one line per socket or fact that
/// could not be read. Blocks for at most about one `timeout_seconds` per 32 sockets.
pub fn scan(config: &QmpConfig, topology: &Topology, paths: &HostPaths) -> Inventory {
    scan_with(&Qmp, config, topology, paths)
}

/// [`scan`] over any kind of control socket.
pub fn scan_with(
    source: &dyn ControlSocket,
    config: &QmpConfig,
    topology: &Topology,
    paths: &HostPaths,
) -> Inventory {
    let sockets: Vec<PathBuf> = config
        .sockets
        .iter()
        .flat_map(|g| glob::expand(g))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let budget = Duration::from_secs_f64(config.timeout_seconds);
    let mut answers = Vec::new();
    for chunk in sockets.chunks(MAX_PARALLEL) {
        answers.extend(ask_all(source, chunk, &paths.proc_root, budget));
    }
    let mut inventory = Inventory::default();
    let mut pids = BTreeSet::new();
    // A socket that answered first, so a VM with two sockets is described by the better one.
    answers.sort_by_key(|(_, a)| a.failure.is_some());
    for (socket, answer) in answers {
        // A second socket of a VM already listed: only what went wrong with it.
        if answer.pid.is_some_and(|pid| !pids.insert(pid)) {
            inventory.problems.extend(answer.failure);
            continue;
        }
        let found = vm::build(source, &socket, answer, config, topology, paths);
        inventory.problems.extend(found.problems);
        inventory.vms.extend(found.vm);
    }
    inventory.vms.sort_by(|a, b| a.name.cmp(&b.name));
    inventory
}

/// Asks every socket of `sockets` at once, each on a thread of its own with its own deadline.
fn ask_all(
    source: &dyn ControlSocket,
    sockets: &[PathBuf],
    proc_root: &Path,
    budget: Duration,
) -> Vec<(PathBuf, Answer)> {
    std::thread::scope(|scope| {
        let asking: Vec<_> = sockets
            .iter()
            .map(|socket| {
                let thread = scope
                    .spawn(move || source.ask(socket, proc_root, Instant::now() + budget, budget));
                (socket, thread)
            })
            .collect();
        asking
            .into_iter()
            .map(|(socket, thread)| {
                let answer = thread.join().unwrap_or_else(|_| Answer {
                    failure: Some(format!("QMP socket {}: the scan failed", socket.display())),
                    ..Answer::default()
                });
                (socket.clone(), answer)
            })
            .collect()
    })
}

impl ControlSocket for Qmp {
    fn vmm(&self) -> Vmm {
        Vmm::Qemu
    }

    fn ask(&self, socket: &Path, proc_root: &Path, deadline: Instant, budget: Duration) -> Answer {
        let mut answer = Answer::default();
        let conn = match client::connect(socket) {
            Ok(conn) => conn,
            Err(e) => {
                if matches!(e, QmpError::Backlog { .. }) {
                    answer.pid = peer::listener_pid(proc_root, socket);
                }
                answer.gone = e.socket_gone();
                answer.failure = Some(e.to_string());
                return answer;
            }
        };
        answer.pid = conn
            .peer_pid
            .or_else(|| peer::listener_pid(proc_root, socket));
        if let Err(e) = converse(conn, socket, deadline, budget, &mut answer) {
            answer.failure = Some(e.to_string());
        }
        answer
    }

    fn vcpus_by_name(&self, proc_root: &Path, pid: u32) -> Result<Vec<VcpuThread>, ThreadsError> {
        super::threads::vcpu_threads(proc_root, pid)
    }

    fn vcpu_thread_names(&self) -> &'static str {
        "\"CPU N/KVM\" (QEMU names them only with -name ...,debug-threads=on)"
    }
}

/// The conversation itself; each fact is kept as soon as it is read, so a socket that
/// fails half-way still gives what it said before.
fn converse(
    conn: client::Connection,
    socket: &Path,
    deadline: Instant,
    budget: Duration,
    answer: &mut Answer,
) -> Result<(), QmpError> {
    let mut session = client::Session::open(conn, socket, deadline, budget)?;
    let name: NameInfo = session.query("query-name", None, "{\"name\": ..}")?;
    answer.name = name.name.filter(|n| !n.is_empty());
    let uuid: UuidInfo = session.query("query-uuid", None, "{\"UUID\": ..}")?;
    answer.uuid = uuid.known().map(String::from);
    let cpus: Vec<CpuInfoFast> =
        session.query("query-cpus-fast", None, "a list of vCPUs with thread ids")?;
    answer.vcpus = Some(cpus.iter().map(|c| (c.cpu_index, c.thread_id)).collect());
    answer.gpus = Some(vfio_devices(&mut session, answer)?);
    Ok(())
}

/// Host addresses of the vfio-pci devices. Found by QOM type in both containers of
/// command-line devices (with and without `id=`) rather than through `query-pci`, which
/// lists only what the guest's firmware has enumerated (a device behind a bridge of a guest
/// that has not booted is missing) and cannot tell a vfio-pci device from an emulated one.
fn vfio_devices(
    session: &mut client::Session,
    answer: &mut Answer,
) -> Result<Vec<String>, QmpError> {
    let mut addresses = Vec::new();
    for container in ["/machine/peripheral", "/machine/peripheral-anon"] {
        let children: Vec<QomProperty> = session.query(
            "qom-list",
            Some(json!({ "path": container })),
            "a list of QOM children",
        )?;
        for child in children.iter().filter(|c| c.kind == VFIO_PCI_CHILD) {
            let path = format!("{container}/{}", child.name);
            let host = qom_string(session, &path, "host")?;
            let sysfsdev = qom_string(session, &path, "sysfsdev")?;
            match reply::vfio_host_address(host.as_deref(), sysfsdev.as_deref()) {
                Some(address) if !addresses.contains(&address) => addresses.push(address),
                Some(_) => {}
                None => answer.notes.push(format!(
                    "vfio-pci device {path} has no host address in `host` ({host:?}) or `sysfsdev` ({sysfsdev:?})"
                )),
            }
        }
    }
    Ok(addresses)
}

/// A string property of a QOM object; None when the object has no such property.
fn qom_string(
    session: &mut client::Session,
    path: &str,
    property: &str,
) -> Result<Option<String>, QmpError> {
    let arguments = json!({ "path": path, "property": property });
    match session.query::<serde_json::Value>("qom-get", Some(arguments), "a property value") {
        Ok(value) => Ok(value.as_str().map(String::from)),
        Err(QmpError::Reply {
            source: reply::ReplyError::Refused { .. },
            ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
