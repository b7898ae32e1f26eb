//! The domain's GPUs as libvirt lists them: PCI and mdev `<hostdev>`s, with the host's PCI
//! address built from libvirt's address attributes.

use roxmltree::Node;

use super::{child_elements, GpuRef};

/// Builds "0000:3b:00.0" from libvirt's address attributes ("0x3b" or "3b", any case);
/// `None` if a part is not hex or out of range.
pub fn pci_address_from_parts(
    domain: &str,
    bus: &str,
    slot: &str,
    function: &str,
) -> Option<String> {
    let hex = |text: &str, max: u32| -> Option<u32> {
        let text = text.trim();
        let digits = text
            .strip_prefix("0x")
            .or_else(|| text.strip_prefix("0X"))
            .unwrap_or(text);
        // from_str_radix accepts a leading '+', which is no part of an address.
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok().filter(|&v| v <= max)
    };
    let (domain, bus) = (hex(domain, u32::MAX)?, hex(bus, 0xff)?);
    let (slot, function) = (hex(slot, 0x1f)?, hex(function, 7)?);
    Some(format!("{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"))
}

/// PCI and mdev `<hostdev>`s in device order; other hostdev types (usb, scsi) are no GPUs.
pub(super) fn read_hostdevs(root: Node) -> Result<Vec<GpuRef>, String> {
    let mut gpus = Vec::new();
    let hostdevs = child_elements(root, "devices").flat_map(|d| child_elements(d, "hostdev"));
    for hostdev in hostdevs {
        // mode='capabilities' hostdevs (LXC) have types storage/misc/net, so this skips them too.
        let kind = hostdev.attribute("type").unwrap_or("");
        if kind != "pci" && kind != "mdev" {
            continue;
        }
        // The hostdev's own <address> is where the guest sees it; the host's is in <source>.
        let address = child_elements(hostdev, "source")
            .flat_map(|s| child_elements(s, "address"))
            .next()
            .ok_or_else(|| format!("<hostdev type='{kind}'> has no <source><address>"))?;
        let gpu = if kind == "pci" {
            let attr = |name| address.attribute(name);
            let parts = (
                attr("domain").unwrap_or("0x0000"),
                attr("bus").unwrap_or(""),
                attr("slot").unwrap_or(""),
                attr("function").unwrap_or(""),
            );
            let address =
                pci_address_from_parts(parts.0, parts.1, parts.2, parts.3).ok_or_else(|| {
                    format!(
                        "<hostdev type='pci'> source address domain={:?} bus={:?} slot={:?} \
                         function={:?} is not a PCI address",
                        parts.0, parts.1, parts.2, parts.3
                    )
                })?;
            GpuRef::Pci { address }
        } else {
            let uuid = address.attribute("uuid").unwrap_or("").trim();
            if uuid.is_empty() {
                return Err("<hostdev type='mdev'> source address has no uuid".to_string());
            }
            GpuRef::Mdev {
                uuid: uuid.to_ascii_lowercase(),
            }
        };
        if !gpus.contains(&gpu) {
            gpus.push(gpu);
        }
    }
    Ok(gpus)
}
