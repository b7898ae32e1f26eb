//! A synthetic host for the page at scale: `vms` VMs of `vcpus` vCPUs each on 2 sockets x 64
//! cores x 2 SMT threads (256 CPUs), 8 GPUs per socket, served by the daemon's own HTTP side
//! (pinsight::http::serve) with the view changed every second, as a busy host would.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use pinsight::cpuset::CpuSet;
use pinsight::inventory::{Gpu, GpuSource};
use pinsight::view::{
    HostView, NodeView, OverheadView, Part, SocketView, TopologyView, VcpuView, VmView,
};

const CORES: u32 = 64;
const CPUS: u32 = 4 * CORES;

/// The serving side; stops with the test process.
pub struct Server {
    /// "127.0.0.1:PORT".
    pub addr: String,
}

fn gpu(socket: u32, i: u32) -> String {
    format!("0000:{:02x}:00.0", 0x10 + 0x40 * socket + i)
}

fn topology() -> TopologyView {
    let socket = |s: u32| SocketView {
        id: s,
        nodes: vec![NodeView {
            id: s,
            // CPU n and n + 128 are SMT siblings, as Linux numbers them.
            cores: (0..CORES)
                .map(|c| vec![s * CORES + c, s * CORES + c + 2 * CORES])
                .collect(),
            gpus: (0..8).map(|i| gpu(s, i)).collect(),
        }],
    };
    TopologyView {
        sockets: vec![socket(0), socket(1)],
        other_nodes: vec![],
        offline_cpus: CpuSet::new(),
        reserved_cpus: "0,128".parse().expect("a CPU list"),
    }
}

/// The view at `tick`: VM i's vCPUs run on CPUs spread over the host, one in five of them
/// on the far socket, shifted every tick.
pub fn view(vms: u32, vcpus: u32, tick: u64) -> HostView {
    let vms = (0..vms)
        .map(|i| {
            let socket = i % 2;
            let vcpus = (0..vcpus)
                .map(|v| {
                    let far = (i + v) % 5 == 0;
                    let home = if far { 1 - socket } else { socket };
                    let cpu = home * CORES + (i * 8 + v + tick as u32) % CORES + (v % 2) * 2 * CORES;
                    let raw = serde_json::json!({
                        "vcpu": v, "tid": 1000 + i * 100 + v, "allowed_cpus": format!("0-{}", CPUS - 1),
                        "allowed_on_far_socket": true,
                        "run_seconds": {"local": 100.0, "same_socket": 0.0, "remote": if far { 30.0 } else { 0.0 }, "none": 0.0},
                        "cross_socket_migrations": 3, "kvm_exits": [{"locality": "local", "reason": "hlt", "count": 12345}],
                        "remote_ratio": if far { 1.0 } else { 0.0 }, "repin_recommended": far, "measured": true,
                        "recent_cpus": {cpu.to_string(): 0.97}
                    });
                    serde_json::from_value::<VcpuView>(raw).expect("a vCPU view")
                })
                .collect::<Vec<_>>();
            let far = vcpus.iter().filter(|v| v.remote_ratio == Some(1.0)).count();
            VmView {
                domain: format!("instance-{i:08x}"),
                uuid: format!("00000000-0000-0000-0000-{i:012x}"),
                pid: 10_000 + i,
                gpus: vec![Gpu {
                    address: gpu(socket, i % 8),
                    node: Some(socket),
                    source: GpuSource::Hostdev,
                }],
                gpu_nodes: vec![socket],
                nova_instance: Some(format!("instance-{i:08x}")),
                nova_project: Some("demo".into()),
                run_seconds: Default::default(),
                kvm_exits: Default::default(),
                remote_ratio: Some(far as f64 / vcpus.len() as f64),
                overhead: Some(OverheadView {
                    parts: BTreeMap::from([(Part::Cpu, 0.03 * far as f64 / vcpus.len() as f64)]),
                    total: 0.03 * far as f64 / vcpus.len() as f64,
                }),
                vcpus,
                ..Default::default()
            }
        })
        .collect();
    HostView {
        version: env!("CARGO_PKG_VERSION").into(),
        tick,
        libvirt_up: true,
        max_exported_vms: 1000,
        vms,
        topology: topology(),
        ..Default::default()
    }
}

impl Server {
    /// Serves `view(vms, vcpus, tick)` on a loopback port, a new tick every second.
    pub fn start(vms: u32, vcpus: u32) -> Server {
        let shared = pinsight::daemon::shared();
        *shared.write().expect("the view lock") = Arc::new(view(vms, vcpus, 1));
        let listener =
            pinsight::http::bind("127.0.0.1:0".parse().expect("an address")).expect("bind a port");
        let addr = listener.local_addr().expect("its address").to_string();
        let web = Arc::new(std::sync::RwLock::new(Arc::new(
            pinsight::http::WebConfig::plain(),
        )));
        let serving = shared.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                let never = std::future::pending::<()>();
                let _ =
                    pinsight::http::serve(listener, serving, web, Default::default(), never).await;
            });
        });
        std::thread::spawn(move || {
            for tick in 2.. {
                std::thread::sleep(Duration::from_secs(1));
                *shared.write().expect("the view lock") = Arc::new(view(vms, vcpus, tick));
            }
        });
        Server { addr }
    }

    /// Bytes of one /status.json answer.
    pub fn status_json_len(&self) -> usize {
        let mut r = ureq::get(format!("http://{}/status.json", self.addr))
            .call()
            .expect("GET /status.json");
        r.body_mut().read_to_string().expect("a body").len()
    }
}
