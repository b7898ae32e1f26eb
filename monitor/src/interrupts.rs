//! GPU interrupts: the host interrupt lines vfio-pci requests for a passed-through device, as
//! the kernel names them in /proc/interrupts (`vfio-msix[N](0000:3b:00.0)`,
//! `vfio-msi[N](...)`, `vfio-intx(...)`), counted per CPU, with each line's affinity from
//! /proc/irq/N/{smp_affinity_list,effective_affinity_list}.
//!
//! Posted interrupts (Intel VT-d PI, AMD AVIC) are delivered to the vCPU without the host
//! handling them, so they do not show here: on such hosts these counts are a floor.
//!
//! The root of these files is `irq_proc_root` (default /proc): tests point it at a fixture of
//! the same shape, since no VFIO device exists on the test machines.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::cpuset::CpuSet;

/// /proc/interrupts (or its fixture) could not be read or is not in the kernel's format.
#[derive(Debug, thiserror::Error)]
pub enum InterruptsError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line is not what the kernel writes.
    #[error("{}: line {line}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// How a vfio-pci interrupt line is delivered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum IrqKind {
    /// MSI-X vector.
    Msix,
    /// MSI vector.
    Msi,
    /// Legacy INTx line.
    Intx,
}

/// One vfio-pci interrupt line of a device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IrqLine {
    /// The host IRQ number.
    pub irq: u32,
    /// MSI-X, MSI or INTx.
    pub kind: IrqKind,
    /// Interrupts handled per CPU since boot.
    pub per_cpu: BTreeMap<u32, u64>,
    /// CPUs the line may be delivered to (smp_affinity_list); `None` when unreadable.
    pub affinity: Option<CpuSet>,
    /// CPUs it is really delivered to (effective_affinity_list, kernels >= 4.15 on most
    /// interrupt controllers); `None` when the file is absent.
    pub effective: Option<CpuSet>,
}

impl IrqLine {
    /// Where the line is delivered: the effective affinity when the kernel says, else the
    /// configured one.
    pub fn delivered_to(&self) -> Option<&CpuSet> {
        self.effective.as_ref().or(self.affinity.as_ref())
    }
}

/// Every vfio-pci interrupt line on the host, by device PCI address (as the kernel writes it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VfioInterrupts {
    /// Lines by device address, ordered by IRQ number.
    pub by_device: BTreeMap<String, Vec<IrqLine>>,
}

/// Reads the vfio-pci lines of `<root>/interrupts` and their affinity under `<root>/irq/`.
pub fn read(root: &Path) -> Result<VfioInterrupts, InterruptsError> {
    let path = root.join("interrupts");
    let text = std::fs::read_to_string(&path).map_err(|source| InterruptsError::Read {
        path: path.clone(),
        source,
    })?;
    let mut found =
        parse(&text).map_err(|(line, reason)| InterruptsError::Format { path, line, reason })?;
    for lines in found.by_device.values_mut() {
        for line in lines {
            let dir = root.join("irq").join(line.irq.to_string());
            // An IRQ freed between the two reads simply has no affinity to show.
            line.affinity = read_cpus(&dir.join("smp_affinity_list"));
            line.effective = read_cpus(&dir.join("effective_affinity_list"));
        }
    }
    Ok(found)
}

fn read_cpus(path: &Path) -> Option<CpuSet> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The vfio-pci lines of a /proc/interrupts text (affinity not filled in). An error carries
/// the 1-based line number and what is wrong.
pub fn parse(text: &str) -> Result<VfioInterrupts, (usize, String)> {
    let mut lines = text.lines().enumerate();
    let (_, header) = lines.next().ok_or((1, "empty file".to_string()))?;
    // Only online CPUs have a column, so the header says which CPU each column is.
    let cpus: Vec<u32> = header
        .split_whitespace()
        .map(|c| {
            c.strip_prefix("CPU")
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| (1, format!("header column {c:?} is not CPUn")))
        })
        .collect::<Result<_, _>>()?;
    if cpus.is_empty() {
        return Err((1, "the header names no CPU".into()));
    }
    let mut found = VfioInterrupts::default();
    for (i, line) in lines {
        let n = i + 1;
        let Some((label, rest)) = line.split_once(':') else {
            return Err((n, "no \"IRQ:\" label".into()));
        };
        // Named lines (NMI, LOC, ERR, MIS, ...) are the architecture's, never vfio's.
        let Ok(irq) = label.trim().parse::<u32>() else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let mut per_cpu = BTreeMap::new();
        for &cpu in &cpus {
            let count = fields
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .ok_or_else(|| (n, format!("IRQ {irq}: no count for CPU{cpu}")))?;
            per_cpu.insert(cpu, count);
        }
        // The rest is the chip, the hardware IRQ and the handlers' names (", " between).
        let names = fields.collect::<Vec<_>>().join(" ");
        for name in names.split(", ") {
            if let Some((kind, device)) = vfio_name(name.rsplit(' ').next().unwrap_or(name)) {
                found.by_device.entry(device).or_default().push(IrqLine {
                    irq,
                    kind,
                    per_cpu: per_cpu.clone(),
                    affinity: None,
                    effective: None,
                });
            }
        }
    }
    Ok(found)
}

/// `vfio-msix[3](0000:3b:00.0)` -> (Msix, "0000:3b:00.0").
fn vfio_name(name: &str) -> Option<(IrqKind, String)> {
    let rest = name.strip_prefix("vfio-")?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("msix") {
        (IrqKind::Msix, r)
    } else if let Some(r) = rest.strip_prefix("msi") {
        (IrqKind::Msi, r)
    } else {
        (IrqKind::Intx, rest.strip_prefix("intx")?)
    };
    // An index in brackets for MSI and MSI-X, none for INTx.
    let rest = match rest.strip_prefix('[') {
        Some(r) => r.split_once(']')?.1,
        None => rest,
    };
    let device = rest.strip_prefix('(')?.strip_suffix(')')?;
    (!device.is_empty()).then(|| (kind, device.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "            CPU0       CPU1       CPU3
  0:         44          0          0   IO-APIC   2-edge      timer
156:       1000          0          7  IR-PCI-MSIX-0000:3b:00.0    0-edge      vfio-msix[0](0000:3b:00.0)
157:          0        250          0  IR-PCI-MSIX-0000:3b:00.0    1-edge      vfio-msix[1](0000:3b:00.0)
 40:          5          0          0   IO-APIC  16-fasteoi   ehci_hcd:usb1, vfio-intx(0000:af:00.0)
 41:          1          2          3  PCI-MSI 524288-edge      vfio-msi[0](0000:af:00.1)
NMI:          0          0          0   Non-maskable interrupts
ERR:          0
";

    #[test]
    fn finds_each_vfio_line_with_its_counts_per_online_cpu() {
        let found = parse(TEXT).unwrap();
        let gpu = &found.by_device["0000:3b:00.0"];
        assert_eq!(gpu.len(), 2);
        assert_eq!(gpu[0].irq, 156);
        assert_eq!(gpu[0].kind, IrqKind::Msix);
        assert_eq!(gpu[0].per_cpu, BTreeMap::from([(0, 1000), (1, 0), (3, 7)]));
        assert_eq!(gpu[1].per_cpu[&1], 250);
        // A shared legacy line names vfio after another handler.
        assert_eq!(found.by_device["0000:af:00.0"][0].kind, IrqKind::Intx);
        assert_eq!(found.by_device["0000:af:00.1"][0].kind, IrqKind::Msi);
        assert_eq!(found.by_device.len(), 3);
    }

    #[test]
    fn a_host_without_vfio_has_no_lines() {
        let text = "  CPU0 CPU1\n  0: 1 2 IO-APIC 2-edge timer\nLOC: 5 6 Local timer interrupts\n";
        assert_eq!(parse(text).unwrap(), VfioInterrupts::default());
    }

    #[test]
    fn malformed_text_is_named_by_line() {
        assert_eq!(parse("").unwrap_err().0, 1);
        assert!(parse("CPU0 banana\n").unwrap_err().1.contains("banana"));
        let err = parse("  CPU0 CPU1\n156: 12 vfio-msix[0](0000:3b:00.0)\n").unwrap_err();
        assert_eq!(err.0, 2);
        assert!(err.1.contains("CPU1"), "{}", err.1);
        assert_eq!(parse("  CPU0\ngarbage\n").unwrap_err().0, 2);
    }

    #[test]
    fn vfio_names() {
        assert_eq!(
            vfio_name("vfio-msix[12](0000:3b:00.0)"),
            Some((IrqKind::Msix, "0000:3b:00.0".into()))
        );
        assert_eq!(
            vfio_name("vfio-intx(0000:3b:00.0)").unwrap().0,
            IrqKind::Intx
        );
        assert_eq!(vfio_name("vfio-msix[1]"), None);
        assert_eq!(vfio_name("vfio-msi[1]()"), None);
        assert_eq!(vfio_name("nvme0q1"), None);
    }

    #[test]
    fn reads_affinity_from_the_irq_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("interrupts"), TEXT).unwrap();
        let irq = dir.path().join("irq/156");
        std::fs::create_dir_all(&irq).unwrap();
        std::fs::write(irq.join("smp_affinity_list"), "0-3\n").unwrap();
        std::fs::write(irq.join("effective_affinity_list"), "0\n").unwrap();
        let found = read(dir.path()).unwrap();
        let line = &found.by_device["0000:3b:00.0"][0];
        assert_eq!(line.affinity, Some("0-3".parse().unwrap()));
        assert_eq!(line.delivered_to(), Some(&"0".parse().unwrap()));
        // IRQ 157 has no directory: no affinity, not an error.
        assert_eq!(found.by_device["0000:3b:00.0"][1].delivered_to(), None);
        let missing = read(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope/interrupts"), "{missing}");
    }
}
