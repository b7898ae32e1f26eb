//! The memory and interrupt fixes: when each is recommended, how memory is moved under each
//! numatune mode, and their guard rails (enforce needs both modes, the bytes-per-second
//! budget, the per-VM cooldown, irqbalance).

use super::*;
use crate::config::FixMode;
use crate::inventory::domain_xml::Numatune;
use crate::policy::fixes::{
    banned_irqs, evaluate, FixGuards, FixInputs, FixPlan, FixVerdict, Irqbalance, MemoryMethod,
};

const GPU: &str = "0000:3b:00.0";
const MIB: u64 = 1 << 20;

fn gpu_vm(name: &str, allowed: &[&str]) -> Vm {
    crate::test_support::VmBuilder::new(name)
        .vcpus(allowed)
        .gpu(GPU, 1)
        .build()
}

fn enforcing() -> PolicyConfig {
    PolicyConfig {
        memory: FixMode::Enforce,
        irq: FixMode::Enforce,
        memory_bytes_per_second: MIB as f64,
        ..PolicyConfig::default()
    }
}

struct Case {
    config: PolicyConfig,
    guards: FixGuards,
    memory: BTreeMap<String, crate::memory::Resident>,
    ratios: BTreeMap<String, f64>,
    irqbalance: Option<Irqbalance>,
    enforce: bool,
}

impl Case {
    fn new(config: PolicyConfig) -> Case {
        Case {
            config,
            // An hour of budget accrued.
            guards: FixGuards::new(NOW - 3600.0),
            memory: BTreeMap::new(),
            ratios: BTreeMap::new(),
            irqbalance: None,
            enforce: true,
        }
    }

    fn memory_on(mut self, vm: &str, node: u32, bytes: u64) -> Case {
        self.memory
            .entry(vm.into())
            .or_default()
            .by_node
            .insert(node, bytes);
        self
    }

    fn eval(&self, vms: &[Vm]) -> FixPlan {
        let interrupts =
            crate::interrupts::read(&crate::test_support::fixture_path("proc/two-socket-gpu"))
                .unwrap();
        evaluate(
            &self.config,
            &self.guards,
            &FixInputs {
                topology: &topo("two-socket-gpu"),
                vms,
                memory: &self.memory,
                remote_ratios: &self.ratios,
                interrupts: &interrupts,
                irqbalance: self.irqbalance.as_ref(),
                enforce: self.enforce,
                now: NOW,
            },
        )
    }
}

#[test]
fn memory_off_the_gpus_node_moves_when_the_vcpus_sit_by_the_gpu() {
    let case = Case::new(enforcing()).memory_on("vm", 0, 100 * MIB);
    let plan = case.eval(&[gpu_vm("vm", &["1"])]);
    let fix = &plan.memory[0];
    assert_eq!(fix.verdict, FixVerdict::Apply);
    assert_eq!(fix.method, MemoryMethod::MigratePages);
    assert_eq!(
        (fix.from.to_string(), fix.to.to_string()),
        ("0".into(), "1".into())
    );
    assert_eq!(fix.bytes, 100 * MIB);
    assert!(
        fix.reason
            .contains("100% of its memory (100 MiB) is on node(s) 0"),
        "{}",
        fix.reason
    );
    // vCPUs that may run far: the repin comes first, no memory fix.
    assert!(case.eval(&[gpu_vm("vm", &["0-1"])]).memory.is_empty());
    // ... unless they ran on the GPU's socket (remote share at most remote_ratio_clear).
    let mut ran_near = Case::new(enforcing()).memory_on("vm", 0, 100 * MIB);
    ran_near.ratios.insert("vm".into(), 0.1);
    assert_eq!(ran_near.eval(&[gpu_vm("vm", &["0-1"])]).memory.len(), 1);
    // Hugetlb pages on nodes unknown: the figures are not the VM's memory's place, no move.
    let mut partial = Case::new(enforcing()).memory_on("vm", 0, 100 * MIB);
    partial.memory.get_mut("vm").unwrap().hugetlb_node_unknown = 1024 * MIB;
    assert!(partial.eval(&[gpu_vm("vm", &["1"])]).memory.is_empty());
}

#[test]
fn memory_mostly_on_the_gpus_node_or_a_vm_without_gpu_is_left_alone() {
    let case = Case::new(enforcing())
        .memory_on("vm", 0, 40 * MIB)
        .memory_on("vm", 1, 60 * MIB);
    assert!(
        case.eval(&[gpu_vm("vm", &["1"])]).memory.is_empty(),
        "40% < 0.5"
    );
    let plain = crate::test_support::VmBuilder::new("vm")
        .vcpus(&["1"])
        .build();
    assert!(case.eval(&[plain]).memory.is_empty());
    // At the threshold it is recommended.
    let case = Case::new(PolicyConfig {
        memory_remote_high: 0.4,
        ..enforcing()
    })
    .memory_on("vm", 0, 40 * MIB)
    .memory_on("vm", 1, 60 * MIB);
    assert_eq!(case.eval(&[gpu_vm("vm", &["1"])]).memory[0].bytes, 40 * MIB);
}

#[test]
fn the_numatune_mode_says_how_memory_moves() {
    let case = Case::new(enforcing()).memory_on("vm", 0, 100 * MIB);
    let with = |mode: &str, nodeset: Option<&str>| {
        let mut vm = gpu_vm("vm", &["1"]);
        vm.spec.numatune = Some(Numatune {
            mode: mode.into(),
            nodeset: nodeset.map(String::from),
        });
        case.eval(&[vm]).memory.remove(0)
    };
    let strict = with("strict", Some("0"));
    assert_eq!(
        (strict.method.clone(), strict.verdict),
        (MemoryMethod::Restart, FixVerdict::NeedsRestart)
    );
    assert!(
        strict
            .reason
            .contains("`virsh numatune vm --nodeset 1 --config`, then restart"),
        "{}",
        strict.reason
    );
    let restrictive = with("restrictive", Some("0"));
    assert_eq!(
        restrictive.method,
        MemoryMethod::Numatune {
            before: "0".into(),
            after: "1".into()
        }
    );
    assert_eq!(restrictive.verdict, FixVerdict::Apply);
    let preferred = with("preferred", Some("0"));
    assert_eq!(preferred.method, MemoryMethod::MigratePages);
    assert!(
        preferred.reason.contains("mode='preferred'"),
        "{}",
        preferred.reason
    );
}

#[test]
fn enforce_needs_both_the_fix_and_the_daemon_in_enforce() {
    let recommend = Case::new(PolicyConfig {
        memory_bytes_per_second: MIB as f64,
        ..PolicyConfig::default()
    })
    .memory_on("vm", 0, 100 * MIB);
    let plan = recommend.eval(&[gpu_vm("vm", &["1"])]);
    assert_eq!(plan.memory[0].verdict, FixVerdict::Recommend);
    assert!(plan.memory[0]
        .reason
        .contains("policy.memory = \"recommend\""));
    assert_eq!(plan.irq[0].verdict, FixVerdict::Recommend);
    let mut daemon_recommends = Case::new(enforcing()).memory_on("vm", 0, 100 * MIB);
    daemon_recommends.enforce = false;
    let plan = daemon_recommends.eval(&[gpu_vm("vm", &["1"])]);
    assert_eq!(plan.memory[0].verdict, FixVerdict::Recommend);
    assert!(plan.memory[0]
        .reason
        .contains("only under policy.mode = \"enforce\""));
    let off = Case::new(PolicyConfig {
        memory: FixMode::Off,
        irq: FixMode::Off,
        ..enforcing()
    })
    .memory_on("vm", 0, 100 * MIB);
    let plan = off.eval(&[gpu_vm("vm", &["1"])]);
    assert!(plan.memory.is_empty() && plan.irq.is_empty());
}

#[test]
fn a_move_larger_than_the_budget_allows_waits() {
    let mut case = Case::new(enforcing())
        .memory_on("a", 0, 10 * MIB)
        .memory_on("b", 0, 10 * MIB);
    case.guards = FixGuards::new(NOW - 15.0); // 15 MiB accrued at 1 MiB/s
    let plan = case.eval(&[gpu_vm("a", &["1"]), gpu_vm("b", &["1"])]);
    assert_eq!(plan.memory[0].verdict, FixVerdict::Apply);
    assert_eq!(plan.memory[1].verdict, FixVerdict::WaitingBudget);
    assert!(
        plan.memory[1].reason.contains("waits 5s more"),
        "{}",
        plan.memory[1].reason
    );
    // The move is charged: right after it, nothing is left.
    case.guards
        .record_memory("uuid-a", 10 * MIB, MIB as f64, NOW);
    assert!((case.guards.allowance(MIB as f64, NOW) - 5.0 * MIB as f64).abs() < 1.0);
    // More than the budget ever accrues (an hour of it) is said so.
    let huge = Case::new(enforcing()).memory_on("a", 0, 3601 * MIB);
    let plan = huge.eval(&[gpu_vm("a", &["1"])]);
    assert_eq!(plan.memory[0].verdict, FixVerdict::WaitingBudget);
    assert!(plan.memory[0]
        .reason
        .contains("exceed what the budget ever accrues"));
}

#[test]
fn each_kind_of_fix_has_its_own_per_vm_cooldown() {
    let mut case = Case::new(enforcing()).memory_on("vm", 0, 10 * MIB);
    case.guards
        .record_memory("uuid-vm", 0, MIB as f64, NOW - 10.0);
    let plan = case.eval(&[gpu_vm("vm", &["1"])]);
    assert_eq!(plan.memory[0].verdict, FixVerdict::SkippedCooldown);
    assert!(plan.memory[0]
        .reason
        .contains("fixed 10s ago (policy.fix_cooldown_seconds = 600)"));
    assert_eq!(
        plan.irq[0].verdict,
        FixVerdict::Apply,
        "the IRQ fix is another kind"
    );
    case.guards.seed("uuid-vm", None, Some(NOW - 599.0));
    assert_eq!(
        case.eval(&[gpu_vm("vm", &["1"])]).irq[0].verdict,
        FixVerdict::SkippedCooldown
    );
    case.guards.forget_gone(&[]);
    assert_eq!(
        case.eval(&[gpu_vm("vm", &["1"])]).irq[0].verdict,
        FixVerdict::Apply
    );
}

#[test]
fn a_misplaced_gpu_line_moves_to_the_gpus_node_unless_irqbalance_would_move_it_back() {
    let mut case = Case::new(enforcing());
    let plan = case.eval(&[gpu_vm("vm", &["0-1"])]);
    let fix = &plan.irq[0];
    // IRQ 156 is delivered to CPU 0 (socket 0); 157 to CPU 1, the GPU's node.
    assert_eq!(fix.lines.len(), 1);
    let line = &fix.lines[0];
    assert_eq!(
        (line.irq, line.before.to_string(), line.after.to_string()),
        (156, "0-1".into(), "1".into())
    );
    assert_eq!(fix.verdict, FixVerdict::Apply);
    case.irqbalance = Some(Irqbalance {
        pid: 4242,
        banned: Default::default(),
    });
    let fix = case.eval(&[gpu_vm("vm", &["0-1"])]).irq.remove(0);
    assert_eq!(fix.verdict, FixVerdict::SkippedIrqbalance);
    assert!(
        fix.reason.contains("irqbalance (pid 4242) runs") && fix.reason.contains("--banirq=156"),
        "{}",
        fix.reason
    );
    // An IRQ irqbalance is told to leave alone is pinsight's to move.
    case.irqbalance = Some(Irqbalance {
        pid: 4242,
        banned: [156].into(),
    });
    assert_eq!(
        case.eval(&[gpu_vm("vm", &["0-1"])]).irq[0].verdict,
        FixVerdict::Apply
    );
    // Reserved CPUs are left out of the target unless that leaves none.
    let reserved = Case::new(PolicyConfig {
        reserved_cpus: cpus("1"),
        ..enforcing()
    });
    assert_eq!(
        reserved.eval(&[gpu_vm("vm", &["0-1"])]).irq[0].lines[0]
            .after
            .to_string(),
        "1"
    );
}

#[test]
fn irqbalance_command_lines() {
    assert_eq!(
        banned_irqs(&["--banirq=43", "--banirq", "44", "-i45", "-i", "x"]),
        [43, 44, 45].into()
    );
    assert!(banned_irqs(&["--foreground", "-i"]).is_empty());
}
