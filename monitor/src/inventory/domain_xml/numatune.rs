//! `<numatune><memory mode=.. nodeset=../>`: the memory policy libvirt gives a domain, shown
//! beside where its memory really is (a strict nodeset cannot change live since libvirt 8,
//! so it says whether moving the memory is a live change or needs a restart).

use roxmltree::Node;
use serde::Serialize;

use super::child_elements;
use crate::cpuset::CpuSet;

/// Highest NUMA node id accepted in a nodeset (the kernel's MAX_NUMNODES is at most 1024).
const MAX_NODE: u32 = 1023;

/// A domain's memory policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Numatune {
    /// strict, preferred, interleave or restrictive.
    pub mode: String,
    /// The nodes, as a normalised list ("0-1"); None when libvirt places it (`placement='auto'`).
    pub nodeset: Option<String>,
}

/// The domain's `<numatune><memory>`, None without one; a bad one is a warning, not an error
/// (it only labels the VM).
pub fn read(root: Node, domain: &str, warnings: &mut Vec<String>) -> Option<Numatune> {
    let memory = child_elements(root, "numatune")
        .next()
        .and_then(|t| child_elements(t, "memory").next())?;
    // libvirt's default mode is strict.
    let mode = memory.attribute("mode").unwrap_or("strict");
    if !matches!(mode, "strict" | "preferred" | "interleave" | "restrictive") {
        warnings.push(format!(
            "domain {domain}: <numatune><memory mode={mode:.64?}> is not a libvirt mode; ignored"
        ));
        return None;
    }
    let nodeset = match memory.attribute("nodeset") {
        None => None,
        Some(text) => match CpuSet::parse_within(text, &CpuSet::from_range(0, MAX_NODE)) {
            Ok(nodes) if !nodes.is_empty() => Some(nodes.to_string()),
            Ok(_) | Err(_) => {
                warnings.push(format!(
                    "domain {domain}: <numatune><memory nodeset={text:.64?}> is not a list of nodes 0-{MAX_NODE}; ignored"
                ));
                return None;
            }
        },
    };
    Some(Numatune {
        mode: mode.to_string(),
        nodeset,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numatune(inner: &str) -> (Option<Numatune>, Vec<String>) {
        let xml = format!("<domain><numatune>{inner}</numatune></domain>");
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let mut warnings = Vec::new();
        (read(doc.root_element(), "vm", &mut warnings), warnings)
    }

    #[test]
    fn mode_and_nodeset_are_read_and_normalised() {
        let (n, w) = numatune("<memory mode='strict' nodeset='1,0'/>");
        assert_eq!(
            n,
            Some(Numatune {
                mode: "strict".into(),
                nodeset: Some("0-1".into())
            })
        );
        assert!(w.is_empty());
        let (n, _) = numatune("<memory placement='auto'/>");
        assert_eq!(
            n.map(|n| (n.mode, n.nodeset)),
            Some(("strict".into(), None))
        );
    }

    #[test]
    fn hostile_values_are_warnings_naming_the_domain() {
        for inner in [
            "<memory mode='bogus' nodeset='0'/>",
            "<memory mode='strict' nodeset='0-1048575'/>",
            "<memory mode='strict' nodeset='x'/>",
        ] {
            let (n, w) = numatune(inner);
            assert_eq!(n, None, "{inner}");
            assert!(
                w.len() == 1 && w[0].starts_with("domain vm:"),
                "{inner}: {w:?}"
            );
        }
        assert_eq!(numatune("").0, None);
    }
}
