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
#[path = "xml_tests.rs"]
mod tests;
