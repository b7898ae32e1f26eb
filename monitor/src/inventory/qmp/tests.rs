//! The scan over sockets served in this process: the conversation of a real QEMU (replayed
//! from a captured transcript, with this process's threads as the vCPUs), a vfio-pci device
//! (no VFIO here), and sockets that hang, speak garbage or are stale. Real QEMU is in
//! tests/qmp.rs.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::*;
use crate::test_support::topo;

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as u32 }
}

/// What a fake server does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Greets and answers like QEMU, with one vfio-pci GPU at 0000:3b:00.0.
    Qemu,
    /// Accepts and says nothing.
    Silent,
    /// Sends a line that is not JSON.
    Garbage,
}

/// Serves `socket` on a thread named "CPU 0/KVM" (so it passes for a vCPU thread); returns
/// that thread's tid.
fn serve(socket: &Path, behaviour: Behaviour) -> u32 {
    let listener = UnixListener::bind(socket).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("CPU 0/KVM".into())
        .spawn(move || {
            let tid = gettid();
            tx.send(tid).unwrap();
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                match behaviour {
                    Behaviour::Silent => held.push(stream),
                    Behaviour::Garbage => {
                        let _ = stream.write_all(b"\x00\x01 this is not QMP\n");
                        held.push(stream);
                    }
                    Behaviour::Qemu => converse_like_qemu(stream, tid),
                }
            }
        })
        .unwrap();
    rx.recv().unwrap()
}

fn converse_like_qemu(mut stream: std::os::unix::net::UnixStream, tid: u32) {
    let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;
    let _ = writeln!(stream, "{greeting}");
    let reader = BufReader::new(stream.try_clone().unwrap());
    for line in reader.lines() {
        let Ok(line) = line else { return };
        let reply = if line.contains("query-name") {
            r#"{"return": {"name": "fake-vm"}}"#.to_string()
        } else if line.contains("query-uuid") {
            r#"{"return": {"UUID": "6b1c7a3e-0c2f-4c7e-9a53-2f0c1e9d8a11"}}"#.to_string()
        } else if line.contains("query-cpus-fast") {
            format!(r#"{{"return": [{{"thread-id": {tid}, "cpu-index": 0, "target": "x86_64"}}]}}"#)
        } else if line.contains("\"/machine/peripheral\"") {
            r#"{"return": [{"name": "type", "type": "string"}, {"name": "gpu0", "type": "child<vfio-pci>"}]}"#.into()
        } else if line.contains("qom-list") {
            r#"{"return": [{"name": "type", "type": "string"}]}"#.into()
        } else if line.contains("\"host\"") {
            r#"{"return": "0000:3b:00.0"}"#.into()
        } else if line.contains("sysfsdev") {
            r#"{"return": ""}"#.into()
        } else {
            // qmp_capabilities; an event first, as QEMU may send one at any time.
            r#"{"event": "RESUME", "timestamp": {"seconds": 1, "microseconds": 2}}
{"return": {}}"#
                .into()
        };
        if writeln!(stream, "{reply}").is_err() {
            return;
        }
    }
}

fn config(dir: &Path, timeout_seconds: f64) -> QmpConfig {
    QmpConfig {
        sockets: vec![format!("{}/*.qmp", dir.display())],
        timeout_seconds,
        ..QmpConfig::default()
    }
}

#[test]
fn fake_sockets_each_give_what_they_can_within_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let topology = topo("two-socket-gpu");
    let paths = HostPaths::default();

    // A socket that speaks QMP: everything, with the vfio-pci GPU on the fixture's node 1.
    let tid = serve(&dir.path().join("a.qmp"), Behaviour::Qemu);
    let inv = scan(&config(dir.path(), 2.0), &topology, &paths);
    assert!(inv.problems.is_empty(), "{:?}", inv.problems);
    let [vm] = &inv.vms[..] else {
        panic!("{inv:?}")
    };
    assert_eq!((vm.name.as_str(), vm.vmm), ("fake-vm", Vmm::Qemu));
    assert_eq!(vm.uuid, "6b1c7a3e-0c2f-4c7e-9a53-2f0c1e9d8a11");
    assert_eq!(vm.pid, std::process::id());
    assert_eq!(
        vm.vcpus.iter().map(|v| (v.vcpu, v.tid)).collect::<Vec<_>>(),
        [(0, tid)]
    );
    assert_eq!(vm.gpus[0].address, "0000:3b:00.0");
    assert_eq!(vm.gpu_nodes, [1]);
    std::fs::remove_file(dir.path().join("a.qmp")).unwrap();

    // Silent, garbage and stale sockets: a problem line each, naming the socket, within the
    // deadline (asked in parallel: one deadline for all). The process behind them is still
    // known and its vCPU threads found by name ("CPU 0/KVM", the server threads here).
    serve(&dir.path().join("silent.qmp"), Behaviour::Silent);
    serve(&dir.path().join("garbage.qmp"), Behaviour::Garbage);
    drop(UnixListener::bind(dir.path().join("stale.qmp")).unwrap());
    let started = Instant::now();
    let inv = scan(&config(dir.path(), 0.5), &topology, &paths);
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "the scan took {took:?}");
    let line = |name: &str| {
        let path = dir.path().join(name).display().to_string();
        inv.problems
            .iter()
            .find(|p| p.contains(&path))
            .unwrap_or_else(|| panic!("no problem names {path}: {:?}", inv.problems))
            .clone()
    };
    let silent = line("silent.qmp");
    assert!(
        silent.contains("no answer to the greeting within 0.5 s"),
        "{silent}"
    );
    assert!(silent.contains("another client may hold"), "{silent}");
    let garbage = line("garbage.qmp");
    assert!(garbage.contains("not JSON"), "{garbage}");
    // Both belong to this process: the first socket (by path) describes the VM.
    assert!(garbage.contains("vCPU threads by their names"), "{garbage}");
    assert!(
        garbage.contains("missing:") && garbage.contains("GPUs"),
        "{garbage}"
    );
    let stale = line("stale.qmp");
    assert!(stale.contains("no process listens"), "{stale}");
    // Both served sockets belong to this process: one VM, described once.
    assert_eq!(inv.vms.len(), 1, "{:?}", inv.vms);
    assert!(inv.vms[0].vcpus.len() >= 2, "{:?}", inv.vms[0].vcpus);
}

#[test]
fn the_operator_table_names_gpus_by_vm_name_or_pid_file() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("vm.pid");
    std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
    let table = BTreeMap::from([
        ("train-7".to_string(), vec!["3b:00.0".to_string()]),
        (
            pid_file.display().to_string(),
            vec!["0000:af:00.0".to_string()],
        ),
        ("other".to_string(), vec!["0000:5e:00.0".to_string()]),
    ]);
    let mut found = vm_declared(&table, "train-7", std::process::id());
    found.sort();
    assert_eq!(found, ["0000:3b:00.0", "0000:af:00.0"]);
    assert!(vm_declared(&table, "x", 1).is_empty());
}

use std::collections::BTreeMap;

fn vm_declared(table: &BTreeMap<String, Vec<String>>, name: &str, pid: u32) -> Vec<String> {
    super::vm::declared_gpus(table, name, pid)
}

#[test]
fn a_qemu_vm_with_a_libvirt_domain_s_name_is_left_out_with_a_problem() {
    use crate::test_support::VmBuilder;
    let mut libvirt = Inventory {
        vms: vec![VmBuilder::new("b").build(), VmBuilder::new("d").build()],
        problems: vec!["libvirt said".into()],
    };
    let qemu = |name: &str| {
        let mut vm = VmBuilder::new(name).build();
        vm.vmm = Vmm::Qemu;
        vm
    };
    let qmp = Inventory {
        vms: vec![qemu("a"), qemu("b"), qemu("c")],
        problems: vec!["QMP socket x: said".into()],
    };
    merge(qmp, &mut libvirt);
    let names: Vec<(&str, Vmm)> = libvirt
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.vmm))
        .collect();
    assert_eq!(
        names,
        [
            ("a", Vmm::Qemu),
            ("b", Vmm::Libvirt),
            ("c", Vmm::Qemu),
            ("d", Vmm::Libvirt)
        ]
    );
    assert_eq!(libvirt.problems.len(), 3, "{:?}", libvirt.problems);
    assert!(libvirt.problems[2].contains("QEMU VM b") && libvirt.problems[2].contains("left out"));
}
