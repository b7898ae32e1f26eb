//! Reads what pinsight needs from a libvirt domain XML: identity, vCPUs, pins, GPUs, metadata.
//!
//! Pure parsing, no libvirt calls. Two kinds of input get two kinds of strictness: what libvirt
//! itself wrote (name, uuid, `<vcpu>`, `<cputune>`, `<hostdev>`) is well formed on any real
//! host, so anything odd there is an error (pinsight does not act on a domain it misreads);
//! what an operator wrote in pinsight's metadata element is checked leniently: a bad
//! declaration becomes a warning and is skipped, so a typo never hides the VM.

use std::collections::BTreeMap;

use roxmltree::{Document, Node, ParsingOptions};

use crate::cpuset::CpuSet;
use cpus::{read_cputune, read_vcpu};
pub use hostdev::pci_address_from_parts;
use hostdev::read_hostdevs;
pub use numatune::Numatune;

pub use cache::SpecCache;
pub use limits::{
    cut_label_value, MAX_ATTRIBUTES_PER_ELEMENT, MAX_DOMAIN_XML_BYTES, MAX_DOMAIN_XML_NODES,
    MAX_LABEL_VALUE_BYTES, MAX_METADATA_ELEMENT_BYTES, MAX_METADATA_ENTRIES,
};
pub(crate) use limits::{element_over_limits, text_over_limits};

/// Namespace of the operator's declarations for pinsight (pinsight never writes it).
pub const PINSIGHT_DOMAIN_NS: &str = "urn:pinsight:domain:1";
/// Namespace of what pinsight records about its own actions.
pub const PINSIGHT_STATE_NS: &str = "urn:pinsight:state:1";
/// Namespace of OpenStack Nova's instance metadata.
pub const NOVA_NS: &str = "http://openstack.org/xmlns/libvirt/nova/1.1";
/// Namespace written by older Nova releases; VMs they started still carry it.
pub const NOVA_NS_LEGACY: &str = "http://openstack.org/xmlns/libvirt/nova/1.0";

/// Used in messages when the domain's name cannot be read.
const UNKNOWN_DOMAIN: &str = "unknown";

/// Why a domain XML could not be read; every message names the domain and the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainXmlError {
    /// The text is not well-formed XML (truncated, garbage, empty).
    #[error("domain {domain}: malformed XML: {reason}")]
    Malformed {
        /// The domain's name if it could be found in the text, else "unknown".
        domain: String,
        /// The XML parser's message, with line and column.
        reason: String,
    },
    /// An element every domain has is absent or empty.
    #[error("domain {domain}: missing or empty <{element}>")]
    Missing {
        /// The domain's name, or "unknown" when `<name>` is the missing element.
        domain: String,
        /// The element's name.
        element: &'static str,
    },
    /// An element libvirt writes has a value pinsight cannot read.
    #[error("domain {domain}: {reason}")]
    Invalid {
        /// The domain's name.
        domain: String,
        /// The element, the value and what is wrong with it.
        reason: String,
    },
}

/// What pinsight knows about one domain from its XML.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct DomainSpec {
    /// libvirt domain name.
    pub name: String,
    /// libvirt domain UUID as written in the XML.
    pub uuid: String,
    /// Number of vCPUs now (`<vcpu current=..>` if set, else the `<vcpu>` count).
    pub vcpus: u32,
    /// PCI and mdev hostdevs in device order, then declared GPUs not already attached.
    pub gpus: Vec<GpuRef>,
    /// Per-vCPU pins from `<cputune><vcpupin>`.
    pub vcpu_pins: BTreeMap<u32, CpuSet>,
    /// Emulator thread pin from `<cputune><emulatorpin>`.
    pub emulator_pin: Option<CpuSet>,
    /// Default placement of all vCPUs from `<vcpu cpuset=..>`.
    pub vcpu_cpuset: Option<CpuSet>,
    /// Nova's instance metadata, when an OpenStack compute node started the domain.
    pub nova: Option<NovaInfo>,
    /// The operator's repin policy for this domain.
    pub policy: RepinPolicy,
    /// Raw XML of pinsight's own state element, if any.
    pub state: Option<String>,
    /// That element parsed, once with the rest of the XML (the inventory's cache parses a
    /// domain's XML once per change), so no tick parses it again.
    #[serde(skip)]
    pub state_record:
        Option<Result<crate::policy::record::Record, crate::policy::record::RecordError>>,
    /// The memory policy from `<numatune><memory>`.
    pub numatune: Option<Numatune>,
    /// Skipped operator declarations and ignored elements, each naming the domain and value.
    pub warnings: Vec<String>,
}

impl DomainSpec {
    /// Sets pinsight's state element and its parsed record together.
    pub fn set_state(&mut self, xml: impl Into<String>) {
        let xml = xml.into();
        self.state_record = Some(crate::policy::record::Record::parse(&xml));
        self.state = Some(xml);
    }
}

/// A GPU (or a device that may be one: sysfs decides) attached to or declared for a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum GpuRef {
    /// PCI pass-through hostdev, address normalised ("0000:3b:00.0").
    Pci {
        /// Host PCI address.
        address: String,
    },
    /// Mediated device (vGPU slice); its parent GPU is found through sysfs.
    Mdev {
        /// mdev UUID, lowercase.
        uuid: String,
    },
    /// A GPU the operator declared in pinsight's metadata element.
    Declared {
        /// Host PCI address, normalised.
        address: String,
    },
}

/// Labels from Nova's `<nova:instance>` element.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct NovaInfo {
    /// The instance's display name (`<nova:name>`).
    pub instance_name: Option<String>,
    /// Owning project's name (`<nova:owner><nova:project>`).
    pub project_name: Option<String>,
    /// Owning project's id (`<nova:project uuid=..>`).
    pub project_uuid: Option<String>,
    /// Flavor name (`<nova:flavor name=..>`).
    pub flavor_name: Option<String>,
}

/// The operator's repin policy from `<policy repin="on|off"/>`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RepinPolicy {
    /// `Some(false)` opts the domain out of repinning; `None` follows the daemon's default.
    pub repin: Option<bool>,
    /// `reassert="on|off"`: whether pinsight moves this VM back after someone else changed
    /// its pins; `None` follows `policy.reassert`.
    pub reassert: Option<bool>,
}

/// Parses a domain XML as `virsh dumpxml` prints it (live or inactive), taking any CPU id
/// below [`crate::cpuset::MAX_CPUS`]; the daemon uses [`parse_domain_xml_within`].
pub fn parse_domain_xml(xml: &str) -> Result<DomainSpec, DomainXmlError> {
    let any = CpuSet::from_range(0, crate::cpuset::MAX_CPUS - 1);
    parse_domain_xml_within(xml, &any)
}

/// Parses a domain XML, refusing CPU lists (`<vcpu cpuset>`, `<vcpupin>`, `<emulatorpin>`)
/// with CPUs outside `possible` (the host's possible CPUs): a pin to a CPU the host cannot
/// have is a misread domain, and pinsight does not act on one.
pub fn parse_domain_xml_within(xml: &str, possible: &CpuSet) -> Result<DomainSpec, DomainXmlError> {
    if let Some(why) = text_over_limits(xml, MAX_DOMAIN_XML_BYTES) {
        return Err(DomainXmlError::Invalid {
            domain: guess_name(xml).unwrap_or_else(|| UNKNOWN_DOMAIN.to_string()),
            reason: format!("the domain XML {why}"),
        });
    }
    let options = ParsingOptions {
        nodes_limit: MAX_DOMAIN_XML_NODES,
        ..ParsingOptions::default()
    };
    let doc =
        Document::parse_with_options(xml, options).map_err(|e| DomainXmlError::Malformed {
            domain: guess_name(xml).unwrap_or_else(|| UNKNOWN_DOMAIN.to_string()),
            reason: e.to_string(),
        })?;
    let root = doc.root_element();
    let name = child_text(root, "name");
    if root.tag_name().name() != "domain" || root.tag_name().namespace().is_some() {
        return Err(DomainXmlError::Invalid {
            domain: name.unwrap_or_else(|| UNKNOWN_DOMAIN.to_string()),
            reason: format!("root element is <{}>, not <domain>", root.tag_name().name()),
        });
    }
    let name = name.ok_or_else(|| DomainXmlError::Missing {
        domain: UNKNOWN_DOMAIN.to_string(),
        element: "name",
    })?;
    let invalid = |reason: String| DomainXmlError::Invalid {
        domain: name.clone(),
        reason,
    };
    let uuid = child_text(root, "uuid").ok_or_else(|| DomainXmlError::Missing {
        domain: name.clone(),
        element: "uuid",
    })?;

    let (vcpus, vcpu_cpuset) = read_vcpu(root, possible).map_err(invalid)?;
    let (vcpu_pins, emulator_pin) = read_cputune(root, possible).map_err(invalid)?;
    let mut gpus = read_hostdevs(root).map_err(invalid)?;

    let mut metadata = metadata::read_metadata(xml, root, &name);
    let numatune = numatune::read(root, &name, &mut metadata.warnings);
    for gpu in metadata.declared_gpus {
        // A declaration of an attached GPU adds nothing: the hostdev is the better evidence.
        let attached = matches!(&gpu, GpuRef::Declared { address }
            if gpus.contains(&GpuRef::Pci { address: address.clone() }));
        if !attached && !gpus.contains(&gpu) {
            gpus.push(gpu);
        }
    }

    Ok(DomainSpec {
        name,
        uuid,
        vcpus,
        gpus,
        vcpu_pins,
        emulator_pin,
        vcpu_cpuset,
        nova: metadata.nova,
        policy: metadata.policy,
        state_record: metadata
            .state
            .as_deref()
            .map(crate::policy::record::Record::parse),
        state: metadata.state,
        numatune,
        warnings: metadata.warnings,
    })
}

/// Child elements of `parent` named `name` in no namespace (libvirt's own elements).
fn child_elements<'a, 'input: 'a>(
    parent: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    parent
        .children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
        .filter(|n| n.tag_name().namespace().is_none())
}

/// Trimmed text of the first libvirt child element `name`, if present and not empty.
fn child_text(parent: Node, name: &str) -> Option<String> {
    let text = child_elements(parent, name).next()?.text()?.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Best-effort domain name from text that is not well-formed XML, for error messages.
fn guess_name(xml: &str) -> Option<String> {
    let start = xml.find("<name>")? + "<name>".len();
    let len = xml[start..].find("</name>")?;
    let name = xml[start..start + len].trim();
    let plausible = !name.is_empty() && name.len() <= 256 && !name.contains(['<', '>', '\n']);
    plausible.then(|| name.to_string())
}

mod cache;
mod cpus;
mod hostdev;
mod limits;
mod metadata;
mod numatune;
#[cfg(test)]
mod tests;
