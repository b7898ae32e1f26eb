//! The state element's XML: what `virDomainSetMetadata` is given and what the domain XML
//! (or `virDomainGetMetadata`) gives back.
//!
//! libvirt keeps one element per namespace and gives the element written with
//! `virDomainSetMetadata(key = "pinsight")` that prefix, so what is written here carries no
//! prefix and what is read is matched by namespace, never by prefix.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use roxmltree::{Document, Node};

use super::{utc, Action, ActionKind, ActionResult, Pins, Record, RecordError};
use crate::cpuset::CpuSet;
use crate::inventory::domain_xml::{
    element_over_limits, text_over_limits, MAX_METADATA_ELEMENT_BYTES, PINSIGHT_STATE_NS,
};

impl Record {
    /// Reads the element as it appears in the domain XML (any prefix), or as
    /// `virDomainGetMetadata` returns it (no namespace at all). Unknown children are ignored
    /// (a newer pinsight may add some); a known one with a bad value is an error.
    pub fn parse(xml: &str) -> Result<Record, RecordError> {
        let err = |reason: String| RecordError { reason };
        // Before parsing: the size bound is what keeps a hostile element cheap.
        if let Some(why) = text_over_limits(xml, MAX_METADATA_ELEMENT_BYTES) {
            return Err(err(format!("the element {why}")));
        }
        let doc = Document::parse(xml).map_err(|e| err(format!("malformed XML: {e}")))?;
        let root = doc.root_element();
        let bare = root.tag_name().namespace().is_none() && root.tag_name().name() == "state";
        if root.tag_name().namespace() != Some(PINSIGHT_STATE_NS) && !bare {
            return Err(err(format!(
                "root element <{}> is neither in namespace {PINSIGHT_STATE_NS} nor a bare <state>",
                root.tag_name().name()
            )));
        }
        let mut record = Record {
            uuid: root.attribute("uuid").map(|u| u.trim().to_string()),
            ..Record::default()
        };
        for child in children(root) {
            if let Some(why) = element_over_limits(0, children(child).count()) {
                return Err(err(format!("<{}> {why}", child.tag_name().name())));
            }
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
                    let mut action = Action {
                        time: time_attr(child)?,
                        action: word_attr(
                            child,
                            "action",
                            &[ActionKind::Repin, ActionKind::Restore],
                            |k| k.as_str(),
                        )?,
                        result: result_attr(child)?,
                        reason: child.attribute("reason").unwrap_or("").to_string(),
                        vcpus: BTreeMap::new(),
                        emulator: None,
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
        let mut out = match &self.uuid {
            Some(uuid) => format!("<state uuid=\"{}\">", escape(uuid)),
            None => String::from("<state>"),
        };
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
            let state = match a.result {
                ActionResult::InProgress => "state=\"in_progress\"".to_string(),
                done => format!("state=\"done\" result=\"{}\"", done.as_str()),
            };
            let _ = write!(
                out,
                "<last time=\"{:.3}\" utc=\"{}\" action=\"{}\" {state} reason=\"{}\">",
                a.time,
                utc(a.time),
                a.action.as_str(),
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

/// The one of `words` that attribute `name` spells (`spell` gives each one's spelling).
fn word_attr<T: Copy>(
    node: Node,
    name: &str,
    words: &[T],
    spell: fn(T) -> &'static str,
) -> Result<T, RecordError> {
    let text = node.attribute(name).unwrap_or("");
    words
        .iter()
        .copied()
        .find(|w| spell(*w) == text)
        .ok_or_else(|| RecordError {
            reason: format!(
                "<{} {name}={text:?}> is not one of {}",
                node.tag_name().name(),
                words
                    .iter()
                    .map(|w| spell(*w))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

/// `state="in_progress"`, or `state="done"` (or no state: records of older versions) with
/// its `result`.
fn result_attr(node: Node) -> Result<ActionResult, RecordError> {
    match node.attribute("state") {
        Some("in_progress") => Ok(ActionResult::InProgress),
        None | Some("done") => word_attr(
            node,
            "result",
            &[
                ActionResult::Applied,
                ActionResult::Failed,
                ActionResult::RolledBack,
            ],
            |r| r.as_str(),
        ),
        Some(other) => Err(RecordError {
            reason: format!("<last state={other:?}> is not one of in_progress, done"),
        }),
    }
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

/// Escapes text for an XML attribute value. Tab, newline and carriage return become
/// character references (a parser turns them into spaces otherwise); characters XML 1.0
/// cannot hold at all (NUL, other controls, U+FFFE/U+FFFF) become U+FFFD, because one of them
/// would make the whole element unreadable, and pinsight then leaves the VM alone.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\u{20}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'.. => out.push(c),
            _ => out.push(char::REPLACEMENT_CHARACTER),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::describe;
    use super::*;

    fn cpus(list: &str) -> CpuSet {
        list.parse().unwrap()
    }

    /// What libvirt stores after `set_metadata(key = "pinsight")`: every element prefixed.
    fn as_libvirt_stores_it(written: &str) -> String {
        written
            .replace(
                "<state",
                "<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\"",
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
            uuid: Some("8f0c2a7e-0000-4000-8000-000000000001".into()),
            original: Some(Pins {
                time: 1_764_055_200.5,
                vcpus: BTreeMap::from([(0, cpus("0")), (1, cpus("0-1"))]),
                emulator: Some(cpus("0-1")),
            }),
            last: Some(Action {
                time: 1_764_055_201.25,
                action: ActionKind::Repin,
                result: ActionResult::Applied,
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
    fn a_journal_entry_in_progress_round_trips_and_is_told_apart() {
        let mut record = Record {
            uuid: Some("u-1".into()),
            last: Some(Action {
                time: 10.0,
                action: ActionKind::Repin,
                result: ActionResult::InProgress,
                reason: "planned".into(),
                vcpus: BTreeMap::from([(0, (cpus("0"), cpus("1"))), (1, (cpus("0"), cpus("1")))]),
                emulator: None,
            }),
            ..Record::default()
        };
        let xml = record.to_xml();
        assert!(
            xml.starts_with("<state uuid=\"u-1\">")
                && xml.contains("state=\"in_progress\"")
                && !xml.contains("result="),
            "{xml}"
        );
        let parsed = Record::parse(&as_libvirt_stores_it(&xml)).unwrap();
        assert_eq!(parsed, record);
        assert!(parsed.in_progress().is_some() && parsed.belongs_to("U-1"));
        assert!(!parsed.belongs_to("u-2"), "another domain's record");
        assert!(
            Record::default().belongs_to("u-2"),
            "an older record names no UUID"
        );
        assert_eq!(
            parsed.last.unwrap().left_pins(),
            None,
            "half moved: unknown"
        );
        for (result, pins) in [
            (ActionResult::Applied, "1"),
            (ActionResult::RolledBack, "0"),
        ] {
            let last = record.last.as_mut().unwrap();
            last.result = result;
            let xml = record.to_xml();
            assert!(
                xml.contains(&format!("state=\"done\" result=\"{}\"", result.as_str())),
                "{xml}"
            );
            let parsed = Record::parse(&xml).unwrap();
            assert!(parsed.in_progress().is_none());
            let (left, _) = parsed.last.unwrap().left_pins().unwrap();
            assert_eq!(left[&1], cpus(pins));
        }
        let bad = xml.replace("in_progress", "halfway");
        let e = Record::parse(&bad).unwrap_err().to_string();
        assert!(e.contains("<last state=\"halfway\">"), "{e}");
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
    fn a_record_written_by_the_string_typed_version_still_parses() {
        // Verbatim from a domain's live XML, written by pinsight before `action` and `result`
        // were enums: a restore after a repin whose metadata write failed.
        let old = "<pinsight:state xmlns:pinsight=\"urn:pinsight:state:1\">\
            <pinsight:last time=\"1764055201.250\" utc=\"2025-11-25T07:20:01Z\" \
            action=\"restore\" result=\"applied\" reason=\"pinsight restore: the pins from \
            before pinsight&apos;s first action (2025-11-25T07:20:00Z)\">\
            <pinsight:vcpu id=\"0\" before=\"1\" after=\"0\"/></pinsight:last></pinsight:state>";
        let last = Record::parse(old).unwrap().last.unwrap();
        assert_eq!(
            (last.action, last.result),
            (ActionKind::Restore, ActionResult::Applied)
        );
        assert_eq!(last.vcpus, BTreeMap::from([(0, (cpus("1"), cpus("0")))]));
        let failed = old.replace(
            "action=\"restore\" result=\"applied\"",
            "action=\"repin\" result=\"failed\"",
        );
        let last = Record::parse(&failed).unwrap().last.unwrap();
        assert_eq!(
            (last.action, last.result),
            (ActionKind::Repin, ActionResult::Failed)
        );
        assert!(Record::parse(&failed)
            .unwrap()
            .pinned_by_pinsight()
            .is_empty());
        // The JSON of `plan --undo --json` keeps the strings.
        let json = serde_json::to_value(&last).unwrap();
        assert_eq!(
            (json["action"].as_str(), json["result"].as_str()),
            (Some("repin"), Some("failed"))
        );
        let bad = old.replace("action=\"restore\"", "action=\"teleport\"");
        let e = Record::parse(&bad).unwrap_err().to_string();
        assert!(
            e.contains("<last action=\"teleport\"> is not one of repin, restore"),
            "{e}"
        );
    }
}
