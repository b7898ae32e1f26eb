//! The metadata elements of a domain: the operator's declarations, Nova's labels, pinsight's
//! own state. Each is found by namespace URI, never by prefix, which is arbitrary.

use roxmltree::Node;

use super::limits::element_over_limits;
use super::{
    child_elements, GpuRef, NovaInfo, RepinPolicy, NOVA_NS, NOVA_NS_LEGACY, PINSIGHT_DOMAIN_NS,
    PINSIGHT_STATE_NS,
};
use crate::topology::normalize_pci_address;

/// What the `<metadata>` children say.
#[derive(Debug, Default)]
pub(super) struct Metadata {
    /// GPUs the operator declared, in declaration order.
    pub declared_gpus: Vec<GpuRef>,
    /// The operator's repin policy.
    pub policy: RepinPolicy,
    /// Nova's labels, if Nova started the domain.
    pub nova: Option<NovaInfo>,
    /// Raw XML of pinsight's state element.
    pub state: Option<String>,
    /// Skipped declarations and ignored elements.
    pub warnings: Vec<String>,
}

/// Reads every `<metadata>` child of the domain element `root`; `xml` is the document's text.
pub(super) fn read_metadata(xml: &str, root: Node, domain: &str) -> Metadata {
    let mut found = Metadata::default();
    let elements = child_elements(root, "metadata").flat_map(|m| m.children());
    for element in elements.filter(Node::is_element) {
        match element.tag_name().namespace() {
            Some(PINSIGHT_DOMAIN_NS) if element.tag_name().name() == "domain" => {
                match over_limits(element) {
                    Some(why) => found.warnings.push(format!(
                        "domain {domain}: pinsight metadata element <domain> in \
                         {PINSIGHT_DOMAIN_NS} {why}; its declarations are ignored"
                    )),
                    None => read_operator_element(element, domain, &mut found),
                }
            }
            // libvirt keeps one element per namespace, so a wrongly named one is the
            // operator's whole declaration going unread: say so.
            Some(PINSIGHT_DOMAIN_NS) => found.warnings.push(format!(
                "domain {domain}: metadata element <{}> in {PINSIGHT_DOMAIN_NS} is not <domain>; \
                 its declarations are ignored",
                element.tag_name().name()
            )),
            Some(PINSIGHT_STATE_NS) => found.state = Some(xml[element.range()].to_string()),
            Some(ns @ (NOVA_NS | NOVA_NS_LEGACY)) => {
                // A domain carries one Nova element; the current namespace wins over the old one.
                if ns == NOVA_NS_LEGACY && found.nova.is_some() {
                    continue;
                }
                match over_limits(element) {
                    Some(why) => found.warnings.push(format!(
                        "domain {domain}: Nova metadata element <{}> in {ns} {why}; \
                         its labels are ignored",
                        element.tag_name().name()
                    )),
                    None => found.nova = Some(read_nova(element)),
                }
            }
            _ => {}
        }
    }
    found
}

/// Why `element` is too big to read (bytes of text, child elements), if it is.
fn over_limits(element: Node) -> Option<String> {
    let entries = element.children().filter(Node::is_element).count();
    element_over_limits(element.range().len(), entries)
}

/// Reads the operator's `<domain xmlns="urn:pinsight:domain:1">`; bad entries become warnings.
fn read_operator_element(element: Node, domain: &str, found: &mut Metadata) {
    let Metadata {
        declared_gpus: gpus,
        policy,
        warnings,
        ..
    } = found;
    let mut seen_policy = false;
    for child in element.children().filter(Node::is_element) {
        if child.tag_name().namespace() != Some(PINSIGHT_DOMAIN_NS) {
            continue;
        }
        let local = child.tag_name().name();
        let mut warn = |what: String| {
            warnings.push(format!(
                "domain {domain}: pinsight metadata <{local}> {what}; declaration ignored"
            ));
        };
        match local {
            "gpu" => match child.attribute("address") {
                None => warn("has no address attribute".to_string()),
                Some(text) => match normalize_pci_address(text) {
                    Some(address) => gpus.push(GpuRef::Declared { address }),
                    None => warn(format!(
                        "address {text:?} is not a PCI address (want e.g. 0000:3b:00.0)"
                    )),
                },
            },
            "policy" if seen_policy => warn("appears twice; the first one applies".to_string()),
            "policy" => {
                seen_policy = true;
                match child.attribute("repin").map(str::trim) {
                    Some(v) if v.eq_ignore_ascii_case("on") => policy.repin = Some(true),
                    Some(v) if v.eq_ignore_ascii_case("off") => policy.repin = Some(false),
                    Some(v) => warn(format!("repin {v:?} is neither \"on\" nor \"off\"")),
                    None if child.attribute("reassert").is_some() => {}
                    None => warn("has no repin attribute".to_string()),
                }
                match child.attribute("reassert").map(str::trim) {
                    Some(v) if v.eq_ignore_ascii_case("on") => policy.reassert = Some(true),
                    Some(v) if v.eq_ignore_ascii_case("off") => policy.reassert = Some(false),
                    Some(v) => warn(format!("reassert {v:?} is neither \"on\" nor \"off\"")),
                    None => {}
                }
            }
            _ => warn("is not a known element (known: gpu, policy)".to_string()),
        }
    }
}

/// Labels from Nova's `<nova:instance>`; absent parts stay `None`.
fn read_nova<'a, 'input>(instance: Node<'a, 'input>) -> NovaInfo {
    let ns = instance.tag_name().namespace();
    let child = |parent: Node<'a, 'input>, name: &str| {
        parent.children().find(|n| {
            n.is_element() && n.tag_name().name() == name && n.tag_name().namespace() == ns
        })
    };
    let text = |node: Node| {
        node.text()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(String::from)
    };
    let attr = |node: Node, name| {
        node.attribute(name)
            .filter(|v| !v.is_empty())
            .map(String::from)
    };
    let project = child(instance, "owner").and_then(|owner| child(owner, "project"));
    NovaInfo {
        instance_name: child(instance, "name").and_then(text),
        project_name: project.and_then(text),
        project_uuid: project.and_then(|p| attr(p, "uuid")),
        flavor_name: child(instance, "flavor").and_then(|f| attr(f, "name")),
    }
}
