//! The repin policy end to end on the real host: real KVM guests under libvirtd, the real
//! daemon with its probes, the two-socket fixture (CPU 0 = socket 0, CPU 1 = socket 1 with GPU
//! 0000:3b:00.0). A busy VM pinned by hand to CPU 0 is left alone in observe mode, recommended
//! for a repin in recommend mode, repinned live to CPU 1 in enforce mode (its remote share
//! then falls and pinsight's state element appears), while an opted-out VM and a VM with
//! orchestrator (Nova) pins stay where they are; `pinsight restore` puts CPU 0 back. A VM
//! re-pinned by hand after pinsight's repin is left alone (`skipped_operator`) across
//! cooldowns until `policy.reassert = true` is reloaded.
//!
//! The daemons run with `policy.opt_in = true`, so VMs of other tests running at the same time
//! (which do not opt in) are never moved.

mod common;

use common::pinsight;

use std::time::{Duration, Instant};

use common::daemon::{fixture, Daemon};
use common::policy::{operator, repins, wait_seen};
use common::{metric_value, require_host, wait_for, TestVm, VmOptions};

const STATE_NS: &str = "urn:pinsight:state:1";
const NOVA: &str = "<nova:instance xmlns:nova=\"http://openstack.org/xmlns/libvirt/nova/1.1\">\
    <nova:name>gpu-instance-1</nova:name></nova:instance>";

/// Fast ticks for the test; room on CPU 1 whatever other tests pin there.
const TEST_CONFIG: &str = "tick_seconds = 0.25\nrescan_seconds = 0.5\n\
    remote_ratio_window_seconds = 2.0\n[policy]\nopt_in = true\nmax_oversubscription = 8.0\n";

/// A config file for the terminal commands (plan, restore), removed on drop.
fn config_file(toml: &str) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix("pinsight-repin-")
        .suffix(".toml")
        .tempfile()
        .expect("create the test config");
    let sysfs = fixture("two-socket-gpu");
    std::fs::write(
        file.path(),
        format!("sysfs_root = \"{}\"\n{toml}", sysfs.display()),
    )
    .expect("write the test config");
    file
}

#[test]
fn observe_recommend_enforce_and_restore() {
    require_host();
    let main = TestVm::start(VmOptions {
        metadata_xml: Some(operator("on")),
        ..VmOptions::busy("repin-main")
    });
    main.pin_vcpu(0, "0");
    let optout = TestVm::start(VmOptions {
        metadata_xml: Some(operator("off")),
        vcpu_cpuset: Some("0".into()),
        ..VmOptions::idle("repin-optout")
    });
    let nova = TestVm::start(VmOptions {
        metadata_xml: Some(format!("{}{NOVA}", operator("on"))),
        ..VmOptions::idle("repin-nova")
    });
    nova.pin_vcpu(0, "0");
    nova.pin_vcpu(1, "0");
    let fixture = fixture("two-socket-gpu");
    let config = config_file(TEST_CONFIG);
    let config = config.path().to_str().expect("UTF-8 temp path");

    // Observe (the default): metrics only.
    {
        let daemon = Daemon::start(&fixture, TEST_CONFIG, &[]);
        wait_seen(&daemon, &main);
        std::thread::sleep(Duration::from_secs(2));
        let m = daemon.metrics();
        assert!(
            !m.contains("pinsight_repin"),
            "observe mode evaluated the policy:\n{m}"
        );
        assert_eq!(main.allowed_cpus(0), "0", "observe mode moved the VM");
        assert_eq!(main.metadata(STATE_NS), None);
    }

    // Recommend: the recommendation appears, the pins stay.
    {
        let daemon = Daemon::start(&fixture, TEST_CONFIG, &["--mode", "recommend"]);
        wait_for(
            Duration::from_secs(20),
            "the recommendation for the main VM",
            || {
                let m = daemon.metrics();
                let on = [("domain", main.name.as_str()), ("vcpu", "0")];
                (metric_value(&m, "pinsight_repin_recommended", &on)? == 1.0).then_some(())
            },
        );
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(main.allowed_cpus(0), "0", "recommend mode moved the VM");
        assert_eq!(main.metadata(STATE_NS), None);
        assert_eq!(repins(&daemon, &optout.name, "skipped_optout"), Some(1.0));
        assert_eq!(
            repins(&daemon, &nova.name, "skipped_orchestrator"),
            Some(1.0)
        );
        assert_eq!(repins(&daemon, &main.name, "applied"), None);
        let (ok, plan) = pinsight(&["plan", "-c", config, "--addr", &daemon.addr, "--json"]);
        assert!(ok, "{plan}");
        let plan: serde_json::Value = serde_json::from_str(&plan).expect("plan --json is JSON");
        assert!(
            plan["ratios"].as_str().unwrap().contains(&daemon.addr),
            "{plan}"
        );
        let decision = plan["plan"]["decisions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["domain"] == main.name.as_str())
            .unwrap_or_else(|| panic!("no decision for the main VM in {plan}"))
            .clone();
        assert_eq!(decision["verdict"], "repin", "{decision}");
        assert_eq!(decision["vcpus"][0]["before"], "0", "{decision}");
        assert_eq!(decision["vcpus"][0]["after"], "1", "{decision}");
    }

    // Enforce: repinned live to the GPU's node; the others are left alone.
    let daemon = Daemon::start(&fixture, TEST_CONFIG, &["--mode", "enforce"]);
    let started = Instant::now();
    wait_for(
        Duration::from_secs(20),
        "the main VM repinned to CPU 1",
        || (main.allowed_cpus(0) == "1").then_some(()),
    );
    eprintln!(
        "enforce: repinned {:.2}s after the daemon started",
        started.elapsed().as_secs_f64()
    );
    wait_for(
        Duration::from_secs(10),
        "repins_total{result=applied}",
        || repins(&daemon, &main.name, "applied"),
    );
    let state = main
        .metadata(STATE_NS)
        .expect("pinsight's state element in the live XML");
    assert!(
        state.contains("<original") && state.contains("cpuset=\"0\""),
        "{state}"
    );
    assert!(
        state.contains("action=\"repin\"") && state.contains("after=\"1\""),
        "{state}"
    );
    let live = main.dumpxml();
    assert!(
        live.contains("<pinsight:gpu address=\"0000:3b:00.0\"/>"),
        "operator element kept:\n{live}"
    );
    wait_for(Duration::from_secs(15), "the remote share to fall", || {
        let r = metric_value(
            &daemon.metrics(),
            "pinsight_domain_remote_ratio",
            &[("domain", &main.name)],
        )?;
        (r < 0.1).then_some(r)
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(optout.allowed_cpus(0), "0");
    assert_eq!(nova.allowed_cpus(0), "0");
    assert_eq!(
        repins(&daemon, &optout.name, "skipped_optout"),
        Some(1.0),
        "counted once"
    );
    assert_eq!(
        repins(&daemon, &nova.name, "skipped_orchestrator"),
        Some(1.0)
    );
    assert_eq!(repins(&daemon, &main.name, "applied"), Some(1.0));
    let (ok, status) = pinsight(&["status", "--addr", &daemon.addr]);
    assert!(ok && status.contains("policy: enforce"), "{status}");
    assert!(
        status.contains("last action: ") && status.contains("repin applied: vCPU 0 0 -> 1"),
        "{status}"
    );

    // Undo: plan --undo shows, restore applies; the cooldown keeps the daemon from redoing it.
    let (ok, undo) = pinsight(&["plan", "-c", config, "--undo", &main.name]);
    assert!(ok && undo.contains("vCPU   0: now 1 -> 0"), "{undo}");
    let (ok, restored) = pinsight(&["restore", "-c", config, &main.name]);
    assert!(ok, "{restored}");
    assert!(
        restored.contains("restore applied: vCPU 0 1 -> 0"),
        "{restored}"
    );
    assert_eq!(main.allowed_cpus(0), "0");
    let state = main
        .metadata(STATE_NS)
        .expect("state element after restore");
    assert!(
        state.contains("action=\"restore\"") && !state.contains("<original"),
        "{state}"
    );
    wait_for(
        Duration::from_secs(10),
        "skipped_cooldown after the restore",
        || repins(&daemon, &main.name, "skipped_cooldown"),
    );
    assert_eq!(
        main.allowed_cpus(0),
        "0",
        "the daemon repinned during its cooldown"
    );
    let (ok, again) = pinsight(&["restore", "-c", config, &main.name]);
    assert!(!ok && again.contains("nothing to restore"), "{again}");
}

#[test]
fn no_capacity_when_the_gpu_node_is_reserved() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(operator("on")),
        vcpu_cpuset: Some("0".into()),
        ..VmOptions::busy("repin-full")
    });
    let config = TEST_CONFIG.replace("[policy]\n", "[policy]\nreserved_cpus = \"1\"\n");
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config, &["--mode", "enforce"]);
    wait_for(
        Duration::from_secs(20),
        "repins_total{result=no_capacity}",
        || repins(&daemon, &vm.name, "no_capacity"),
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        repins(&daemon, &vm.name, "no_capacity"),
        Some(1.0),
        "counted once"
    );
    assert_eq!(vm.allowed_cpus(0), "0");
    assert_eq!(
        vm.metadata(STATE_NS),
        None,
        "nothing done, nothing recorded"
    );
    let on = [("domain", vm.name.as_str()), ("vcpu", "0")];
    assert_eq!(
        metric_value(&daemon.metrics(), "pinsight_repin_recommended", &on),
        Some(0.0)
    );
    assert!(
        daemon.log_text().contains("GPU node CPUs 1 (1 reserved)"),
        "{}",
        daemon.log_text()
    );
}

#[test]
fn a_vm_pinned_by_hand_after_a_repin_is_left_alone_until_reassert() {
    require_host();
    let vm = TestVm::start(VmOptions {
        metadata_xml: Some(operator("on")),
        vcpu_cpuset: Some("0".into()),
        ..VmOptions::idle("repin-hand")
    });
    let cooldown = 2.0;
    let config = TEST_CONFIG.replace(
        "[policy]\n",
        &format!("[policy]\nmode = \"enforce\"\ncooldown_seconds = {cooldown}\n"),
    );
    let daemon = Daemon::start(&fixture("two-socket-gpu"), &config, &[]);
    wait_for(Duration::from_secs(20), "the VM repinned to CPU 1", || {
        (vm.allowed_cpus(0) == "1" && vm.allowed_cpus(1) == "1").then_some(())
    });

    // The operator moves vCPU 0 back to the far socket by hand.
    vm.pin_vcpu(0, "0");
    let skipped = wait_for(
        Duration::from_secs(10),
        "repins_total{result=skipped_operator}",
        || repins(&daemon, &vm.name, "skipped_operator"),
    );
    assert_eq!(skipped, 1.0, "counted once per situation");
    // Left alone across more than two cooldowns.
    std::thread::sleep(Duration::from_secs_f64(2.5 * cooldown));
    assert_eq!(
        vm.allowed_cpus(0),
        "0",
        "moved back over the operator's pin"
    );
    assert_eq!(repins(&daemon, &vm.name, "applied"), Some(1.0));
    let (ok, status) = pinsight(&["status", "--addr", &daemon.addr]);
    assert!(ok && status.contains("skipped_operator"), "{status}");

    // policy.reassert = true (a SIGHUP reload): pinsight's placement wins again.
    let text = std::fs::read_to_string(&daemon.config).expect("read the daemon's config");
    let reassert = text.replace("[policy]\n", "[policy]\nreassert = true\n");
    assert_ne!(reassert, text);
    std::fs::write(&daemon.config, reassert).expect("rewrite the config");
    daemon.signal(libc::SIGHUP);
    wait_for(
        Duration::from_secs(15),
        "vCPU 0 moved back to CPU 1",
        || (vm.allowed_cpus(0) == "1").then_some(()),
    );
    // The worker answers the engine at its next tick: the count follows the pins.
    wait_for(
        Duration::from_secs(5),
        "repins_total{result=applied} 2",
        || (repins(&daemon, &vm.name, "applied") == Some(2.0)).then_some(()),
    );
}
