//! pinsight's own audit record in a domain's metadata (`urn:pinsight:state:1`): the pins a VM
//! had before pinsight first acted on it (so `pinsight restore` can put them back) and the last
//! action (what, when, why, from what to what). Pure: parsing and rendering, no libvirt.
//!
//! libvirt keeps one element per namespace and gives the element written with
//! `virDomainSetMetadata(key = "pinsight")` that prefix, so what is written here carries no
//! prefix and what is read is matched by namespace, never by prefix.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use roxmltree::{Document, Node};
use serde::Serialize;

use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::PINSIGHT_STATE_NS;

/// The state element could not be read; pinsight then leaves the VM alone rather than
/// overwrite pins it could not restore.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pinsight state element ({PINSIGHT_STATE_NS}): {reason}")]
pub struct RecordError {
    /// What is wrong, naming the element and value.
    pub reason: String,
}

/// Pins of one VM at one moment.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Pins {
    /// Unix time (seconds) they were read.
    pub time: f64,
    /// Allowed CPUs per vCPU index.
    pub vcpus: BTreeMap<u32, CpuSet>,
    /// Allowed CPUs of the emulator threads, when known.
    pub emulator: Option<CpuSet>,
}

/// One change pinsight made (or tried).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Action {
    /// Unix time (seconds).
    pub time: f64,
    /// "repin" or "restore".
    pub action: String,
    /// "applied" or "failed".
    pub result: String,
    /// Why, in words.
    pub reason: String,
    /// vCPU index -> (before, after).
    pub vcpus: BTreeMap<u32, (CpuSet, CpuSet)>,
    /// Emulator (before, after), when it was moved.
    pub emulator: Option<(CpuSet, CpuSet)>,
}

/// The whole state element.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Record {
    /// Pins before pinsight's first action since the last restore; `None`: nothing to undo.
    pub original: Option<Pins>,
    /// The last action.
    pub last: Option<Action>,
}

impl Record {
    /// Reads the element as it appears in the domain XML (any prefix), or as
    /// `virDomainGetMetadata` returns it (no namespace at all). Unknown children are ignored
    /// (a newer pinsight may add some); a known one with a bad value is an error.
    pub fn parse(xml: &str) -> Result<Record, RecordError> {
        let err = |reason: String| RecordError { reason };
        let doc = Document::parse(xml).map_err(|e| err(format!("malformed XML: {e}")))?;
        let root = doc.root_element();
        let bare = root.tag_name().namespace().is_none() && root.tag_name().name() == "state";
        if root.tag_name().namespace() != Some(PINSIGHT_STATE_NS) && !bare {
            return Err(err(format!(
                "root element <{}> is neither in namespace {PINSIGHT_STATE_NS} nor a bare <state>",
                root.tag_name().name()
            )));
        }
        let mut record = Record::default();
        for child in children(root) {
            match child.tag_name().name() {
                "original" => {
                    let mut pins = Pins {
                        time: time_attr(child)?,
                        ..Pins::default()
                    };
                    for item in children(child) {
                        match item.tag_name().name() {
                            "vcpu" => {
                                pins.vcpus
                                    .insert(vcpu_attr(item)?, cpus_attr(item, "cpuset")?);
                            }
                            "emulator" => pins.emulator = Some(cpus_attr(item, "cpuset")?),
                            _ => {}
                        }
                    }
                    record.original = Some(pins);
                }
                "last" => {
                    let text = |name| child.attribute(name).unwrap_or("").to_string();
                    let mut action = Action {
                        time: time_attr(child)?,
                        action: text("action"),
                        result: text("result"),
                        reason: text("reason"),
                        ..Action::default()
                    };
                    for item in children(child) {
                        let moved = || Ok((cpus_attr(item, "before")?, cpus_attr(item, "after")?));
                        match item.tag_name().name() {
                            "vcpu" => {
                                action.vcpus.insert(vcpu_attr(item)?, moved()?);
                            }
                            "emulator" => action.emulator = Some(moved()?),
                            _ => {}
                        }
                    }
                    record.last = Some(action);
                }
                _ => {}
            }
        }
        Ok(record)
    }

    /// The element to hand to `virDomainSetMetadata` (no prefix: libvirt adds it).
    pub fn to_xml(&self) -> String {
        let mut out = String::from("<state>");
        if let Some(pins) = &self.original {
            let _ = write!(
                out,
                "<original time=\"{:.3}\" utc=\"{}\">",
                pins.time,
                utc(pins.time)
            );
            for (vcpu, cpus) in &pins.vcpus {
                let _ = write!(out, "<vcpu id=\"{vcpu}\" cpuset=\"{cpus}\"/>");
            }
            if let Some(cpus) = &pins.emulator {
                let _ = write!(out, "<emulator cpuset=\"{cpus}\"/>");
            }
            out.push_str("</original>");
        }
        if let Some(a) = &self.last {
            let _ = write!(
                out,
                "<last time=\"{:.3}\" utc=\"{}\" action=\"{}\" result=\"{}\" reason=\"{}\">",
                a.time,
                utc(a.time),
                escape(&a.action),
                escape(&a.result),
                escape(&a.reason)
            );
            for (vcpu, (before, after)) in &a.vcpus {
                let _ = write!(
                    out,
                    "<vcpu id=\"{vcpu}\" before=\"{before}\" after=\"{after}\"/>"
                );
            }
            if let Some((before, after)) = &a.emulator {
                let _ = write!(out, "<emulator before=\"{before}\" after=\"{after}\"/>");
            }
            out.push_str("</last>");
        }
        out.push_str("</state>");
        out
    }

    /// The CPUs pinsight itself pinned each vCPU to in its last applied action.
    pub fn pinned_by_pinsight(&self) -> BTreeMap<u32, CpuSet> {
        match &self.last {
            Some(a) if a.result == "applied" && a.action == "repin" => a
                .vcpus
                .iter()
                .map(|(v, (_, after))| (*v, after.clone()))
                .collect(),
            _ => BTreeMap::new(),
        }
    }
}

/// One line for people: "2026-11-25T07:20:00Z repin applied: vCPU 0 0 -> 1 (reason)".
pub fn describe(action: &Action) -> String {
    let mut moves: Vec<String> = action
        .vcpus
        .iter()
        .map(|(v, (b, a))| format!("vCPU {v} {b} -> {a}"))
        .collect();
    if let Some((b, a)) = &action.emulator {
        moves.push(format!("emulator {b} -> {a}"));
    }
    format!(
        "{} {} {}: {} ({})",
        utc(action.time),
        action.action,
        action.result,
        moves.join(", "),
        action.reason
    )
}

/// Element children in the namespace of `node` (the state namespace, or none for the form
/// libvirt's getter returns).
fn children<'a, 'input>(node: Node<'a, 'input>) -> impl Iterator<Item = Node<'a, 'input>> {
    let ns = node.tag_name().namespace();
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().namespace() == ns)
}

fn time_attr(node: Node) -> Result<f64, RecordError> {
    let text = node.attribute("time").unwrap_or("");
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|t| t.is_finite() && *t >= 0.0)
        .ok_or_else(|| RecordError {
            reason: format!(
                "<{} time={text:?}> is not a Unix time",
                node.tag_name().name()
            ),
        })
}

fn vcpu_attr(node: Node) -> Result<u32, RecordError> {
    let text = node.attribute("id").unwrap_or("");
    text.trim().parse().map_err(|_| RecordError {
        reason: format!("<vcpu id={text:?}> is not a vCPU index"),
    })
}

fn cpus_attr(node: Node, name: &str) -> Result<CpuSet, RecordError> {
    let text = node.attribute(name).unwrap_or("");
    let set: CpuSet = text
        .parse()
        .map_err(|e: crate::cpuset::CpuSetError| RecordError {
            reason: format!("<{} {name}>: {e}", node.tag_name().name()),
        })?;
    if set.is_empty() {
        return Err(RecordError {
            reason: format!("<{} {name}={text:?}> names no CPU", node.tag_name().name()),
        });
    }
    Ok(set)
}

/// Escapes text for an XML attribute value.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Unix seconds as RFC 3339 UTC ("2026-11-25T07:20:00Z"), for people reading the XML.
pub fn utc(unix: f64) -> String {
    let secs = unix.max(0.0) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpus(list: &str) -> CpuSet {
        list.parse().unwrap()
    }

    /// What libvirt stores after `set_metadata(key = "pinsight")`: every element prefixed.
    fn as_libvirt_stores_it(written: &str) -> String {
        written
            .replace(
                "<state>",
                "<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\">",
            )
            .replace("</", "</pinsight:")
            .replace("<original", "<pinsight:original")
            .replace("<last", "<pinsight:last")
            .replace("<vcpu", "<pinsight:vcpu")
            .replace("<emulator", "<pinsight:emulator")
    }

    #[test]
    fn round_trips_through_libvirts_prefixed_form() {
        let record = Record {
            original: Some(Pins {
                time: 1_764_055_200.5,
                vcpus: BTreeMap::from([(0, cpus("0")), (1, cpus("0-1"))]),
                emulator: Some(cpus("0-1")),
            }),
            last: Some(Action {
                time: 1_764_055_201.25,
                action: "repin".into(),
                result: "applied".into(),
                reason: "vCPU 0 remote share 0.97 >= 0.50 & \"more\"".into(),
                vcpus: BTreeMap::from([(0, (cpus("0"), cpus("1")))]),
                emulator: Some((cpus("0-1"), cpus("1"))),
            }),
        };
        let xml = record.to_xml();
        assert!(
            xml.contains("utc=\"2025-11-25T07:20:00Z\""),
            "human-readable time: {xml}"
        );
        let stored = as_libvirt_stores_it(&xml);
        assert_eq!(Record::parse(&stored).unwrap(), record, "{stored}");
        // virDomainGetMetadata hands the element back without any namespace.
        assert_eq!(Record::parse(&xml).unwrap(), record, "{xml}");
        assert_eq!(
            record.pinned_by_pinsight(),
            BTreeMap::from([(0, cpus("1"))])
        );
        assert_eq!(
            describe(record.last.as_ref().unwrap()),
            "2025-11-25T07:20:01Z repin applied: vCPU 0 0 -> 1, emulator 0-1 -> 1 \
             (vCPU 0 remote share 0.97 >= 0.50 & \"more\")"
        );
    }

    #[test]
    fn unknown_children_are_ignored_and_bad_values_named() {
        // The shape an older sketch wrote (tests/fixtures/domains/declared-gpu.xml).
        let old = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:action at=\"x\"/>\
                   <p:before vcpu=\"0\" cpuset=\"0-1\"/></p:state>";
        assert_eq!(Record::parse(old).unwrap(), Record::default());
        let bad = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:original time=\"1\">\
                   <p:vcpu id=\"0\" cpuset=\"0-x\"/></p:original></p:state>";
        let e = Record::parse(bad).unwrap_err().to_string();
        assert!(e.contains("<vcpu cpuset>") && e.contains("0-x"), "{e}");
        let e = Record::parse("<p:state xmlns:p=\"urn:other\"/>").unwrap_err();
        assert!(e.reason.contains("neither in namespace"), "{e}");
        assert!(Record::parse("<domain/>").is_err());
        let e = Record::parse("<state").unwrap_err();
        assert!(e.reason.contains("malformed"), "{e}");
        let no_time = "<p:state xmlns:p=\"urn:pinsight:state:1\"><p:last/></p:state>";
        assert!(Record::parse(no_time)
            .unwrap_err()
            .reason
            .contains("not a Unix time"));
    }

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_210_096.0), "2024-02-29T12:34:56Z");
    }
}
