//! Parsed domain XMLs, kept between rescans: a domain whose XML has not changed is not parsed
//! again (nor its metadata elements, nor pinsight's state record checked again), so what a
//! hostile metadata element costs is paid once per `virsh metadata --set`, not once per
//! rescan of every VM.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

use super::{parse_domain_xml_within, DomainSpec, DomainXmlError, PINSIGHT_STATE_NS};
use crate::cpuset::CpuSet;
use crate::policy::record::Record;

/// What one domain XML text parsed to.
type Parsed = Result<DomainSpec, DomainXmlError>;

/// Parsed domain XMLs by the hash of their text, pruned to what the last scan saw.
#[derive(Debug, Default)]
pub struct SpecCache {
    /// Keyed with a per-process secret, so no one can craft an XML that collides with
    /// another domain's.
    hasher: RandomState,
    entries: HashMap<u64, Parsed>,
    /// Keys asked for since the last prune.
    seen: HashSet<u64>,
    /// How many texts were parsed (a miss); for tests and the log.
    parses: u64,
}

impl SpecCache {
    /// The parsed domain: from the cache when this exact text was parsed before, else parsed
    /// now, with CPU lists bounded by `possible` (the host's possible CPUs) and the state
    /// element checked once.
    pub fn parse(&mut self, xml: &str, possible: &CpuSet) -> Parsed {
        let key = self.hasher.hash_one((xml, possible));
        self.seen.insert(key);
        if let Some(parsed) = self.entries.get(&key) {
            return parsed.clone();
        }
        self.parses += 1;
        let parsed = parse_domain_xml_within(xml, possible).map(|mut spec| {
            if let Some(problem) = check_state(&spec, possible) {
                spec.warnings.push(problem);
            }
            spec
        });
        self.entries.insert(key, parsed.clone());
        parsed
    }

    /// Forgets every text not asked for since the last prune: domains that are gone, and
    /// the old XML of domains that changed. Call after each full scan.
    pub fn prune(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.entries.retain(|key, _| seen.contains(key));
    }

    /// How many texts the cache holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many texts were parsed since it was created.
    pub fn parses(&self) -> u64 {
        self.parses
    }
}

/// A problem line when pinsight's state element cannot be read (the policy will not move
/// the VM: a change it could not undo) or records pins to CPUs the host cannot have.
fn check_state(spec: &DomainSpec, possible: &CpuSet) -> Option<String> {
    let text = spec.state.as_deref()?;
    let record = match Record::parse(text) {
        // The record's error names the element; the VM is still watched.
        Err(e) => return Some(format!("domain {}: {e}; the VM is not moved", spec.name)),
        Ok(record) => record,
    };
    let what = format!(
        "domain {}: pinsight state element in {PINSIGHT_STATE_NS}",
        spec.name
    );
    // Every CPU set the record holds: the original pins (what a restore goes back to) and
    // the last action's before and after.
    let mut pins: Vec<(String, &CpuSet)> = Vec::new();
    if let Some(original) = &record.original {
        pins.extend(original.vcpus.iter().map(|(v, c)| (format!("vCPU {v}"), c)));
        pins.extend(
            original
                .emulator
                .iter()
                .map(|c| ("the emulator".to_string(), c)),
        );
    }
    if let Some(last) = &record.last {
        for (vcpu, (before, after)) in &last.vcpus {
            pins.push((format!("vCPU {vcpu} (last action)"), before));
            pins.push((format!("vCPU {vcpu} (last action)"), after));
        }
        if let Some((before, after)) = &last.emulator {
            pins.push(("the emulator (last action)".to_string(), before));
            pins.push(("the emulator (last action)".to_string(), after));
        }
    }
    pins.into_iter().find_map(|(who, cpus)| {
        let impossible = cpus.difference(possible);
        (!impossible.is_empty()).then(|| {
            format!(
                "{what} records {who} on CPUs {impossible}, not among the host's possible \
                 CPUs {possible}"
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain(name: &str, extra: &str) -> String {
        format!(
            "<domain type='kvm'><name>{name}</name>\
             <uuid>2d833cbe-a208-41db-bb80-226efe2b65e2</uuid><vcpu>2</vcpu>{extra}</domain>"
        )
    }

    #[test]
    fn an_unchanged_text_is_parsed_once_and_pruned_when_gone() {
        let possible = CpuSet::from_range(0, 3);
        let mut cache = SpecCache::default();
        let a = domain("a", "");
        let b = domain("b", "<cputune><vcpupin vcpu='0' cpuset='9'/></cputune>");
        for _ in 0..3 {
            assert_eq!(cache.parse(&a, &possible).unwrap().name, "a");
            let e = cache.parse(&b, &possible).unwrap_err().to_string();
            assert!(
                e.contains("domain b: <vcpupin vcpu='0'>")
                    && e.contains("CPUs 9 are not among the host's possible CPUs 0-3"),
                "{e}"
            );
            cache.prune();
        }
        assert_eq!(cache.parses(), 2, "one parse per text, not per scan");
        assert_eq!(cache.len(), 2);
        let _ = cache.parse(&a, &possible);
        cache.prune();
        assert_eq!(cache.len(), 1, "b is gone");
    }

    #[test]
    fn a_bad_state_element_is_one_problem_naming_the_vm() {
        let possible = CpuSet::from_range(0, 1);
        let entries = "<s:vcpu id='0' cpuset='0-1048575'/>".repeat(40);
        let bomb = format!(
            "<metadata><s:state xmlns:s='{PINSIGHT_STATE_NS}'>\
             <s:original time='1'>{entries}</s:original></s:state></metadata>"
        );
        let mut cache = SpecCache::default();
        let spec = cache.parse(&domain("bombed", &bomb), &possible).unwrap();
        assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
        let w = &spec.warnings[0];
        assert!(
            w.starts_with("domain bombed: pinsight state element (urn:pinsight:state:1)")
                && w.contains("1048575")
                && w.ends_with("the VM is not moved"),
            "{w}"
        );
        let outside = format!(
            "<metadata><s:state xmlns:s='{PINSIGHT_STATE_NS}'>\
             <s:original time='1'><s:vcpu id='0' cpuset='7'/></s:original></s:state></metadata>"
        );
        let spec = cache
            .parse(&domain("outside", &outside), &possible)
            .unwrap();
        assert!(
            spec.warnings[0].contains("records vCPU 0 on CPUs 7, not among the host's possible"),
            "{:?}",
            spec.warnings
        );
        let last = format!(
            "<metadata><s:state xmlns:s='{PINSIGHT_STATE_NS}'><s:last time='1' action='repin' \
             result='applied'><s:vcpu id='1' before='0' after='5-6'/></s:last></s:state>\
             </metadata>"
        );
        let spec = cache.parse(&domain("last", &last), &possible).unwrap();
        assert!(
            spec.warnings[0].contains("records vCPU 1 (last action) on CPUs 5-6"),
            "{:?}",
            spec.warnings
        );
    }
}
