//! pinsight's own audit record in a domain's metadata (`urn:pinsight:state:1`): the UUID of
//! the domain it belongs to, the pins a VM had before pinsight first acted on it (so `pinsight
//! restore` can put them back) and the last action (what, when, why, from what to what). The
//! last action is a journal entry: written `in_progress` with the planned pins before the first
//! pin call and marked done after the last, so an action cut short by a crash is found and
//! reconciled at the next start. Pure: the types here, their XML form in [`xml`], no libvirt.

mod xml;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Pins {
    /// Unix time (seconds) they were read.
    pub time: f64,
    /// Allowed CPUs per vCPU index.
    pub vcpus: BTreeMap<u32, CpuSet>,
    /// Allowed CPUs of the emulator threads, when known.
    pub emulator: Option<CpuSet>,
}

/// What pinsight did to a VM; written as `action="repin"` / `"restore"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Moved misplaced vCPUs (and the emulator) next to the VM's GPUs.
    Repin,
    /// Put back the pins from before pinsight's first action (`pinsight restore`).
    Restore,
}

/// How an action went; written as `state="in_progress"`, or `state="done"` with
/// `result="applied"` / `"failed"` / `"rolled_back"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    /// Recorded before the first pin call and not yet marked done: if pinsight finds this,
    /// it stopped mid-action and the pins may be half moved (see `remediate::reconcile`).
    InProgress,
    /// Every pin was made and recorded.
    Applied,
    /// A pin failed; the ones made were put back (the reason says how that went).
    Failed,
    /// An interrupted action whose targets were no longer valid, put back to its "before".
    RolledBack,
}

impl ActionKind {
    /// The spelling in the state element and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Repin => "repin",
            ActionKind::Restore => "restore",
        }
    }
}

impl ActionResult {
    /// The spelling in the state element, in messages and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionResult::InProgress => "in_progress",
            ActionResult::Applied => "applied",
            ActionResult::Failed => "failed",
            ActionResult::RolledBack => "rolled_back",
        }
    }
}

/// One change pinsight made (or tried).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Action {
    /// Unix time (seconds).
    pub time: f64,
    /// What was done.
    pub action: ActionKind,
    /// How it went.
    pub result: ActionResult,
    /// Why, in words.
    pub reason: String,
    /// vCPU index -> (before, after).
    pub vcpus: BTreeMap<u32, (CpuSet, CpuSet)>,
    /// Emulator (before, after), when it was moved.
    pub emulator: Option<(CpuSet, CpuSet)>,
}

impl Action {
    /// What pinsight left each vCPU it moved (and the emulator) pinned to: the "after" of an
    /// applied action, the "before" of one that failed or was rolled back; `None` for an
    /// action still in progress (the pins may be half moved).
    pub fn left_pins(&self) -> Option<(BTreeMap<u32, CpuSet>, Option<CpuSet>)> {
        let pick = |(before, after): &(CpuSet, CpuSet)| match self.result {
            ActionResult::Applied => after.clone(),
            _ => before.clone(),
        };
        if self.result == ActionResult::InProgress {
            return None;
        }
        let vcpus = self.vcpus.iter().map(|(v, m)| (*v, pick(m))).collect();
        Some((vcpus, self.emulator.as_ref().map(pick)))
    }
}

/// The whole state element.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// UUID of the domain this record was written for; `None` in records of older versions.
    /// A record carrying another UUID (a domain re-created from a copied XML) is not trusted.
    pub uuid: Option<String>,
    /// Pins before pinsight's first action since the last restore; `None`: nothing to undo.
    pub original: Option<Pins>,
    /// The last action.
    pub last: Option<Action>,
}

impl Record {
    /// Whether this record may be trusted for the domain of UUID `uuid` (the same UUID, or an
    /// older record that names none).
    pub fn belongs_to(&self, uuid: &str) -> bool {
        self.uuid
            .as_deref()
            .is_none_or(|own| own.eq_ignore_ascii_case(uuid))
    }

    /// The action left in progress, if pinsight stopped in the middle of one.
    pub fn in_progress(&self) -> Option<&Action> {
        self.last
            .as_ref()
            .filter(|a| a.result == ActionResult::InProgress)
    }

    /// The CPUs pinsight itself pinned each vCPU to in its last applied action.
    pub fn pinned_by_pinsight(&self) -> BTreeMap<u32, CpuSet> {
        match &self.last {
            Some(a) if a.result == ActionResult::Applied && a.action == ActionKind::Repin => a
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
        action.action.as_str(),
        action.result.as_str(),
        moves.join(", "),
        action.reason
    )
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

    /// Found by tests/fuzz.rs: a reason holding NUL made an element no parser reads.
    #[test]
    fn reasons_with_control_characters_round_trip() {
        let record = Record {
            last: Some(Action {
                time: 0.0,
                action: ActionKind::Repin,
                result: ActionResult::Applied,
                reason: "a\0b\tc\nd\re\u{fffe}f".into(),
                vcpus: BTreeMap::new(),
                emulator: None,
            }),
            ..Record::default()
        };
        let parsed = Record::parse(&record.to_xml()).unwrap();
        assert_eq!(parsed.last.unwrap().reason, "a\u{fffd}b\tc\nd\re\u{fffd}f");
    }

    /// The metadata bomb of issue 11, and the bounds that keep any other one cheap.
    #[test]
    fn hostile_records_are_refused_naming_the_limit() {
        let entries = |n: usize, cpus: &str| {
            let vcpus: String = (0..n)
                .map(|i| format!("<vcpu id=\"{i}\" cpuset=\"{cpus}\"/>"))
                .collect();
            format!("<state><original time=\"1\">{vcpus}</original></state>")
        };
        let e = Record::parse(&entries(40, "0-1048575"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CPU 1048575 is out of range"), "{e}");
        let e = Record::parse(&entries(5000, "0")).unwrap_err().to_string();
        assert!(
            e.contains("pinsight state element") && e.contains("more than the limit of 65536"),
            "{e}"
        );
        let many = format!(
            "<state><original time=\"1\">{}</original></state>",
            "<x/>".repeat(4097)
        );
        let e = Record::parse(&many).unwrap_err().to_string();
        assert!(
            e.contains("<original> has 4097 entries, more than the limit of 4096"),
            "{e}"
        );
        let widest = Record::parse(&entries(1000, "0-8191")).unwrap();
        assert_eq!(widest.original.unwrap().vcpus.len(), 1000);
    }

    #[test]
    fn utc_matches_known_dates() {
        assert_eq!(utc(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400.0), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_709_210_096.0), "2024-02-29T12:34:56Z");
    }
}
