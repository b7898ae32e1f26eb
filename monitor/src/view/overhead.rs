//! The overhead estimate, made of parts: for each part of a VM's placement that pinsight
//! measures, its remote share times that part's penalty (the share of performance assumed lost
//! when all of it is remote). The total is their sum, at most 1. Penalties are assumptions
//! with sources (README "Overhead estimate"); the shares are measured.
//!
//! - `cpu`: the vCPUs' run time on another socket than the GPUs (windowed remote ratio).
//! - `memory`: the VM's resident memory on another socket than the GPUs.
//! - `irq`: the GPUs' interrupt lines delivered to no CPU of the GPU's node (the share of
//!   lines, not of interrupts: where the next interrupts will land, not where old ones did).
//! - `emulator`: the run time of QEMU's main loop and IOThreads on another socket than the
//!   GPUs (windowed, like cpu): the host-side threads that serve the VM's emulated and virtio
//!   devices.
//!
//! A part whose input is not measured (no memory cgroup read, no vfio lines) is absent, not
//! zero; a VM without GPUs has no estimate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::VmView;

/// The share of performance assumed lost when a part is entirely remote.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Penalties {
    /// vCPU run time (config `cross_socket_penalty`).
    pub cpu: f64,
    /// Resident memory (config `overhead.memory_penalty`).
    pub memory: f64,
    /// GPU interrupt lines (config `overhead.irq_penalty`).
    pub irq: f64,
    /// Emulator and IOThread run time (config `overhead.emulator_penalty`).
    pub emulator: f64,
}

impl Default for Penalties {
    fn default() -> Self {
        Penalties {
            cpu: 0.03,
            memory: 0.074,
            irq: 0.01,
            emulator: 0.01,
        }
    }
}

/// A part of the placement the estimate is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    /// vCPU run time.
    Cpu,
    /// Resident memory.
    Memory,
    /// GPU interrupt lines.
    Irq,
    /// Emulator and IOThread run time.
    Emulator,
}

impl Part {
    /// The `part` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Cpu => "cpu",
            Part::Memory => "memory",
            Part::Irq => "irq",
            Part::Emulator => "emulator",
        }
    }
}

/// One VM's estimate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OverheadView {
    /// Each measured part: its remote share times its penalty.
    pub parts: BTreeMap<Part, f64>,
    /// The sum of the parts, at most 1.
    pub total: f64,
}

/// The estimate for `vm`, None without GPUs or without any measured part.
pub fn estimate(vm: &VmView, penalties: &Penalties) -> Option<OverheadView> {
    if !vm.has_gpu() {
        return None;
    }
    let irq_share = {
        let lines: usize = vm.gpu_interrupts.iter().map(|g| g.lines.len()).sum();
        let misplaced: usize = vm.gpu_interrupts.iter().map(|g| g.misplaced()).sum();
        (lines > 0).then(|| misplaced as f64 / lines as f64)
    };
    let shares = [
        (Part::Cpu, vm.remote_ratio, penalties.cpu),
        (
            Part::Memory,
            vm.memory.as_ref().and_then(|m| m.remote_ratio),
            penalties.memory,
        ),
        (Part::Irq, irq_share, penalties.irq),
        (Part::Emulator, vm.emulator_remote_ratio, penalties.emulator),
    ];
    let parts: BTreeMap<Part, f64> = shares
        .into_iter()
        .filter_map(|(part, share, penalty)| share.map(|s| (part, s * penalty)))
        .collect();
    if parts.is_empty() {
        return None;
    }
    let total = parts.values().sum::<f64>().min(1.0);
    Some(OverheadView { parts, total })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::interrupts::{GpuInterruptsView, IrqLineView};
    use crate::view::memory::MemoryView;

    fn gpu_vm() -> VmView {
        VmView {
            domain: "vm".into(),
            gpu_nodes: vec![1],
            ..Default::default()
        }
    }

    fn line(misplaced: bool) -> IrqLineView {
        IrqLineView {
            irq: 40,
            kind: crate::interrupts::IrqKind::Msix,
            delivered_to: Some("0".into()),
            misplaced,
        }
    }

    #[test]
    fn each_part_is_its_remote_share_times_its_penalty_and_the_total_their_sum() {
        let mut vm = gpu_vm();
        vm.remote_ratio = Some(0.5);
        vm.memory = Some(MemoryView {
            remote_ratio: Some(1.0),
            ..Default::default()
        });
        vm.gpu_interrupts = vec![GpuInterruptsView {
            gpu: "0000:3b:00.0".into(),
            lines: vec![line(true), line(false), line(false), line(false)],
            ..Default::default()
        }];
        vm.emulator_remote_ratio = Some(0.2);
        let e = estimate(&vm, &Penalties::default()).expect("an estimate");
        assert_eq!(e.parts[&Part::Cpu], 0.5 * 0.03);
        assert_eq!(e.parts[&Part::Memory], 0.074);
        assert_eq!(e.parts[&Part::Irq], 0.25 * 0.01);
        assert_eq!(e.parts[&Part::Emulator], 0.2 * 0.01);
        assert!((e.total - (0.015 + 0.074 + 0.0025 + 0.002)).abs() < 1e-12);
    }

    #[test]
    fn unmeasured_parts_are_absent_and_no_gpu_means_no_estimate() {
        let mut vm = gpu_vm();
        assert_eq!(estimate(&vm, &Penalties::default()), None);
        vm.remote_ratio = Some(0.0);
        let e = estimate(&vm, &Penalties::default()).expect("cpu measured");
        assert_eq!(e.parts.keys().copied().collect::<Vec<_>>(), [Part::Cpu]);
        assert_eq!(e.total, 0.0);
        vm.gpu_nodes.clear();
        assert_eq!(estimate(&vm, &Penalties::default()), None);
    }

    #[test]
    fn the_total_is_at_most_one() {
        let mut vm = gpu_vm();
        vm.remote_ratio = Some(1.0);
        vm.memory = Some(MemoryView {
            remote_ratio: Some(1.0),
            ..Default::default()
        });
        let all = Penalties {
            cpu: 1.0,
            memory: 1.0,
            irq: 1.0,
            emulator: 1.0,
        };
        assert_eq!(estimate(&vm, &all).map(|e| e.total), Some(1.0));
    }
}
