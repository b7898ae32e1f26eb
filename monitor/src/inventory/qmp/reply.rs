//! QMP's JSON, one line at a time: the greeting, command replies, and the few return values
//! pinsight reads. Pure functions of the text, so garbage is an error naming what was
//! expected (and a fuzz target), never a panic.

use serde::Deserialize;
use serde_json::Value;

/// A line that is not the QMP pinsight expects; says what it is and shows its start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplyError {
    /// Not JSON at all.
    #[error("not JSON ({reason}): {start:?}")]
    NotJson {
        /// serde_json's message.
        reason: String,
        /// The first characters of the line.
        start: String,
    },
    /// JSON, but not the object that was expected here.
    #[error("expected {expected}, got {start:?}")]
    Unexpected {
        /// What the protocol has at this point.
        expected: &'static str,
        /// The first characters of the line.
        start: String,
    },
    /// QEMU refused the command.
    #[error("{command} failed: {class}: {desc}")]
    Refused {
        /// The command sent.
        command: String,
        /// QMP's error class ("CommandNotFound", "GenericError", ...).
        class: String,
        /// QEMU's message.
        desc: String,
    },
}

/// How much of a bad line an error shows.
const SHOWN_CHARS: usize = 80;

fn start_of(line: &str) -> String {
    line.trim().chars().take(SHOWN_CHARS).collect()
}

/// The server's first line: `{"QMP": {"version": {"qemu": {...}, "package": ..}, ..}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// "7.2.22": QEMU's version.
    pub version: String,
}

/// Parses the greeting line.
pub fn parse_greeting(line: &str) -> Result<Greeting, ReplyError> {
    let value = json(line)?;
    let unexpected = || ReplyError::Unexpected {
        expected: "the QMP greeting ({\"QMP\": {...}})",
        start: start_of(line),
    };
    let qmp = value.get("QMP").ok_or_else(unexpected)?;
    let qemu = qmp.pointer("/version/qemu");
    let part = |key: &str| qemu.and_then(|q| q.get(key)).and_then(Value::as_u64);
    let version = match (part("major"), part("minor"), part("micro")) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => "unknown".into(),
    };
    Ok(Greeting { version })
}

/// What one line from the server is, once past the greeting.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The answer to the command in flight: its `return` value.
    Return(Value),
    /// An asynchronous event (`{"event": ..}`), which may come between commands.
    Event(String),
}

/// Parses a line after the greeting: a `return`, an `error` of `command`, or an event.
pub fn parse_message(line: &str, command: &str) -> Result<Message, ReplyError> {
    let value = json(line)?;
    if let Some(ret) = value.get("return") {
        return Ok(Message::Return(ret.clone()));
    }
    if let Some(err) = value.get("error") {
        // QEMU's words, bounded: a problem line must stay a line whatever the socket sends.
        let text = |key, most| {
            let words = err.get(key).and_then(Value::as_str).unwrap_or("?");
            words.chars().take(most).collect::<String>()
        };
        return Err(ReplyError::Refused {
            command: command.into(),
            class: text("class", 64),
            desc: text("desc", 2 * SHOWN_CHARS),
        });
    }
    if let Some(event) = value.get("event").and_then(Value::as_str) {
        return Ok(Message::Event(event.into()));
    }
    Err(ReplyError::Unexpected {
        expected: "a QMP reply ({\"return\": ..} or {\"error\": ..})",
        start: start_of(line),
    })
}

/// A `return` value read as `T`; `what` names the command for the error.
pub fn decode<T: for<'de> Deserialize<'de>>(
    value: Value,
    what: &'static str,
) -> Result<T, ReplyError> {
    let start = start_of(&value.to_string());
    serde_json::from_value(value).map_err(|_| ReplyError::Unexpected {
        expected: what,
        start,
    })
}

fn json(line: &str) -> Result<Value, ReplyError> {
    serde_json::from_str(line).map_err(|e| ReplyError::NotJson {
        reason: e.to_string(),
        start: start_of(line),
    })
}

/// `query-name`: `{"name": ..}`, without the key when QEMU was started without `-name`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct NameInfo {
    /// The guest's name.
    pub name: Option<String>,
}

/// `query-uuid`: `{"UUID": ..}` (all zeroes when QEMU was started without `-uuid`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct UuidInfo {
    /// The VM's UUID.
    #[serde(rename = "UUID")]
    pub uuid: String,
}

impl UuidInfo {
    /// The UUID, or None when QEMU has none (all zeroes).
    pub fn known(&self) -> Option<&str> {
        let unset = self.uuid.chars().all(|c| c == '0' || c == '-');
        (!unset).then_some(self.uuid.as_str())
    }
}

/// One element of `query-cpus-fast`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct CpuInfoFast {
    /// vCPU index in the guest.
    #[serde(rename = "cpu-index")]
    pub cpu_index: u32,
    /// Host thread id of the vCPU.
    #[serde(rename = "thread-id")]
    pub thread_id: u32,
}

/// One child of a `qom-list` answer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct QomProperty {
    /// The child's or property's name ("gpu0", "device[3]").
    pub name: String,
    /// Its type: "child<vfio-pci>" for a passed-through PCI device.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The QOM type of a passed-through PCI device.
pub const VFIO_PCI_CHILD: &str = "child<vfio-pci>";

/// The host PCI address of a vfio-pci device from its `host` property ("0000:3b:00.0") or,
/// when it was given as `sysfsdev=`, from that path's last component.
pub fn vfio_host_address(host: Option<&str>, sysfsdev: Option<&str>) -> Option<String> {
    let from_host = host
        .and_then(crate::topology::normalize_pci_address)
        .filter(|a| a != "0000:00:00.0");
    from_host.or_else(|| {
        let last = sysfsdev?.trim_end_matches('/').rsplit('/').next()?;
        crate::topology::normalize_pci_address(last)
    })
}

#[cfg(test)]
#[path = "reply_tests.rs"]
mod tests;
