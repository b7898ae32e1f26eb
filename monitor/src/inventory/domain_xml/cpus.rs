//! The domain's vCPUs and their pins: `<vcpu>` (the count in use and the default cpuset) and
//! `<cputune>`'s `<vcpupin>` and `<emulatorpin>`, in libvirt's cpuset syntax, bounded by the
//! host's possible CPUs.

use std::collections::BTreeMap;

use roxmltree::Node;

use super::child_elements;
use crate::cpuset::CpuSet;

/// The vCPU count in use and the default cpuset from `<vcpu>`.
pub(super) fn read_vcpu(root: Node, possible: &CpuSet) -> Result<(u32, Option<CpuSet>), String> {
    // libvirt gives a domain without <vcpu> one vCPU, and always prints the element.
    let Some(vcpu) = child_elements(root, "vcpu").next() else {
        return Ok((1, None));
    };
    let text = vcpu.text().unwrap_or("").trim();
    let count = match vcpu.attribute("current") {
        Some(current) => current.trim(),
        None => text,
    };
    let vcpus = count
        .parse::<u32>()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("<vcpu> count {count:?} is not a positive number"))?;
    let cpuset = vcpu
        .attribute("cpuset")
        .map(|s| parse_libvirt_cpuset(s, possible).map_err(|e| format!("<vcpu cpuset>: {e}")))
        .transpose()?;
    Ok((vcpus, cpuset))
}

/// Per-vCPU pins and the emulator pin from `<cputune>`.
type Cputune = (BTreeMap<u32, CpuSet>, Option<CpuSet>);

/// Reads `<cputune>`'s `<vcpupin>` and `<emulatorpin>` elements.
pub(super) fn read_cputune(root: Node, possible: &CpuSet) -> Result<Cputune, String> {
    let mut pins = BTreeMap::new();
    let mut emulator = None;
    for tune in child_elements(root, "cputune") {
        for pin in child_elements(tune, "vcpupin") {
            let vcpu_text = pin.attribute("vcpu").unwrap_or("");
            let vcpu: u32 = vcpu_text
                .trim()
                .parse()
                .map_err(|_| format!("<vcpupin vcpu={vcpu_text:?}> is not a vCPU number"))?;
            let cpuset = required_cpuset(pin, &format!("<vcpupin vcpu='{vcpu}'>"), possible)?;
            if pins.insert(vcpu, cpuset).is_some() {
                return Err(format!("<cputune> pins vCPU {vcpu} twice"));
            }
        }
        if let Some(pin) = child_elements(tune, "emulatorpin").next() {
            emulator = Some(required_cpuset(pin, "<emulatorpin>", possible)?);
        }
    }
    Ok((pins, emulator))
}

/// The `cpuset` attribute of a pin element, which must be present and valid.
fn required_cpuset(pin: Node, what: &str, possible: &CpuSet) -> Result<CpuSet, String> {
    let text = pin
        .attribute("cpuset")
        .ok_or_else(|| format!("{what} has no cpuset"))?;
    parse_libvirt_cpuset(text, possible).map_err(|e| format!("{what}: {e}"))
}

/// libvirt's cpuset syntax: the kernel list form plus "^N" exclusions ("0-5,^3"); the CPUs
/// included must be among `possible`.
fn parse_libvirt_cpuset(text: &str, possible: &CpuSet) -> Result<CpuSet, String> {
    let (excluded, included): (Vec<&str>, Vec<&str>) = text
        .split(',')
        .map(str::trim)
        .partition(|item| item.starts_with('^'));
    let include = CpuSet::parse_within(&included.join(","), possible).map_err(
        |e: crate::cpuset::CpuSetError| format!("invalid CPU list {text:?}: {}", e.reason),
    )?;
    let mut exclude = CpuSet::new();
    for item in &excluded {
        // partition() put only items starting with the one-byte '^' here.
        let cpu = item[1..]
            .trim()
            .parse::<u32>()
            .map_err(|_| format!("invalid CPU list {text:?}: {item:?} is not an exclusion"))?;
        exclude.insert(cpu);
    }
    let set = include.difference(&exclude);
    if set.is_empty() {
        return Err(format!("CPU list {text:?} selects no CPU"));
    }
    Ok(set)
}
