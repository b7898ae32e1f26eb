//! The metadata bomb of issue 11 on real VMs: anyone with libvirt write access sets a hostile
//! state element (`urn:pinsight:state:1`) or operator element (`urn:pinsight:domain:1`) on
//! one VM. Before the bounds, 40 entries `cpuset='0-1048575'` took the daemon from 23 MiB to
//! 553 MiB and 43% of a CPU, and another VM's counters fell behind. Now, for each bomb: the
//! daemon's RSS stays under [`MAX_RSS_KIB`], its CPU share under [`MAX_CPU_SHARE`] and its
//! ticks keep their pace; the other VM's run time agrees with schedstat; /status.json has a
//! problem naming the bombed VM and what is wrong.

mod common;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::http_get;
use common::{gpu_metadata, metric_sum, require_host, wait_for, TestVm, VmOptions};

const GPU: &str = "0000:3b:00.0";
const TICK: f64 = 0.25;
const STATE_NS: &str = "urn:pinsight:state:1";
const OPERATOR_NS: &str = "urn:pinsight:domain:1";
/// The daemon's resident size bound under every bomb (it idles at ~25 MiB here; the unit's
/// MemoryMax is 256 MiB).
const MAX_RSS_KIB: u64 = 64 * 1024;
/// The daemon's CPU time over a bombed interval, as a share of one CPU (it idles at a few
/// percent with a 0.25 s tick; the unbounded parser took 43%).
const MAX_CPU_SHARE: f64 = 0.15;
/// Ticks done over the interval, as a share of those the tick period asks for.
const MIN_TICK_PACE: f64 = 0.7;

/// The daemon's /status.json.
fn status(daemon: &Daemon) -> serde_json::Value {
    let text = http_get(&daemon.addr, "/status.json").expect("GET /status.json");
    serde_json::from_str(&text).expect("status.json is JSON")
}

/// VmRSS of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("daemon status");
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

/// utime + stime of `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("daemon stat");
    let after_comm = &text[text.rfind(')').expect("stat has a comm") + 2..];
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from 3 after the comm.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no memory effects.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Sets a metadata element live through the libvirt API: `virsh metadata --set` takes the
/// element as one argument, which the kernel caps at 128 KiB, and the huge bombs are bigger.
fn set_metadata(domain: &str, ns: &str, key: &str, xml: &str) {
    let conn = virt::connect::Connect::open(Some("qemu:///system")).expect("qemu:///system");
    let dom = conn
        .lookup_domain_by_name(domain)
        .expect("the bombed domain");
    dom.set_metadata(
        virt::sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
        Some(xml),
        Some(key),
        Some(ns),
        virt::sys::VIR_DOMAIN_AFFECT_LIVE,
    )
    .unwrap_or_else(|e| panic!("set {ns} metadata of {domain} ({} bytes): {e}", xml.len()));
}

/// A state element with `n` entries `cpuset='0-1048575'`.
fn state_bomb(n: usize) -> String {
    let entries: String = (0..n)
        .map(|i| format!("<vcpu id='{i}' cpuset='0-1048575'/>"))
        .collect();
    format!("<state xmlns='{STATE_NS}'><original time='1'>{entries}</original></state>")
}

#[test]
fn a_metadata_bomb_on_one_vm_costs_little_and_the_other_vm_keeps_its_metrics() {
    require_host();
    let other = TestVm::start(VmOptions {
        name_hint: "bomb-other",
        busy: true,
        spin_iterations: 2000,
        metadata_xml: None,
        ..VmOptions::default()
    });
    other.pin_vcpu(0, "1");
    let bombed = TestVm::start(VmOptions {
        name_hint: "bombed",
        busy: false,
        spin_iterations: 2000,
        metadata_xml: Some(gpu_metadata(GPU)),
        ..VmOptions::default()
    });
    // Far from its GPU: the recommend policy reads the bombed VM's state element.
    bombed.pin_vcpu(0, "0");
    bombed.pin_vcpu(1, "0");
    let daemon = Daemon::start(
        &fixture("two-socket-gpu"),
        &format!("tick_seconds = {TICK}\nrescan_seconds = 1.0\n[policy]\nmode = \"recommend\"\n"),
        &["--bpf-stats"],
    );
    let total = |m: &str| {
        metric_sum(
            m,
            "pinsight_vcpu_run_seconds_total",
            &[("domain", &other.name), ("vcpu", "0")],
        )
    };
    wait_for(Duration::from_secs(20), "both VMs in /status.json", || {
        let vms = status(&daemon)["vms"].as_array()?.len();
        (vms >= 2 && total(&daemon.metrics()) > 0.0).then_some(())
    });
    eprintln!("before any bomb: RSS {} KiB", rss_kib(daemon.pid()));

    let big_state = state_bomb(40_000);
    let operator_entries: String = (0..5000)
        .map(|i| format!("<gpu address='0000:{:02x}:00.0'/>", i % 256))
        .collect();
    let operator_bomb = format!("<domain xmlns='{OPERATOR_NS}'>{operator_entries}</domain>");
    // The huge one last: past the domain XML bound, it hides the whole domain (a problem).
    let bombs: [(&str, &str, String, &str); 4] = [
        (
            "state, 40 entries 0-1048575",
            STATE_NS,
            state_bomb(40),
            "1048575",
        ),
        (
            "state, 200 entries 0-1048575",
            STATE_NS,
            state_bomb(200),
            "1048575",
        ),
        (
            "operator, 5000 entries",
            OPERATOR_NS,
            operator_bomb,
            "is 180091 bytes, more than the limit of 65536; its declarations are ignored",
        ),
        (
            "state, 1.5 MiB",
            STATE_NS,
            big_state,
            "more than the limit of 1048576",
        ),
    ];
    for (what, ns, xml, wrong) in &bombs {
        set_metadata(&bombed.name, ns, "pinsight", xml);
        let problem = wait_for(
            Duration::from_secs(10),
            &format!("a problem naming {} ({what})", bombed.name),
            || {
                let view = status(&daemon);
                view["problems"].as_array()?.iter().find_map(|p| {
                    let p = p.as_str()?;
                    (p.contains(&format!("domain {}", bombed.name)) && p.contains(wrong))
                        .then(|| p.to_string())
                })
            },
        );
        eprintln!("{what}: problem {:.200}", problem);

        // The fenced interval (see tests/vm_locality.rs): the other VM paused at both ends.
        other.suspend();
        let (ours0, _) = daemon.settled("the other VM's run time", total);
        let k0 = other.schedstat_run_ns(0);
        let (cpu0, tick0, t0) = (
            cpu_seconds(daemon.pid()),
            status(&daemon)["tick"].as_u64().expect("tick"),
            Instant::now(),
        );
        other.resume();
        let mut most_rss = 0;
        while t0.elapsed() < Duration::from_secs(4) {
            most_rss = most_rss.max(rss_kib(daemon.pid()));
            std::thread::sleep(Duration::from_millis(100));
        }
        let (cpu1, tick1, wall) = (
            cpu_seconds(daemon.pid()),
            status(&daemon)["tick"].as_u64().expect("tick"),
            t0.elapsed().as_secs_f64(),
        );
        other.suspend();
        let (ours1, _) = daemon.settled("the other VM's run time", total);
        let k1 = other.schedstat_run_ns(0);
        other.resume();
        let (ours, kernel) = (ours1 - ours0, (k1 - k0) as f64 / 1e9);
        let cpu_share = (cpu1 - cpu0) / wall;
        let pace = (tick1 - tick0) as f64 / (wall / TICK);
        eprintln!(
            "{what}: RSS at most {most_rss} KiB, daemon CPU {:.1}%, tick pace {pace:.2}, \
             other VM pinsight {ours:.4}s vs schedstat {kernel:.4}s",
            cpu_share * 100.0
        );
        assert!(most_rss < MAX_RSS_KIB, "{what}: RSS {most_rss} KiB");
        assert!(
            cpu_share < MAX_CPU_SHARE,
            "{what}: the daemon used {:.1}% of a CPU",
            cpu_share * 100.0
        );
        assert!(pace > MIN_TICK_PACE, "{what}: tick pace {pace:.2}");
        assert!(kernel > 0.5, "{what}: the other VM ran only {kernel:.3}s");
        common::assert_agrees_with_schedstat(&format!("{what}: the other VM"), ours, kernel);
    }
    assert!(
        daemon
            .log_text()
            .contains(&format!("domain {}", bombed.name)),
        "the log names the bombed VM"
    );
}
