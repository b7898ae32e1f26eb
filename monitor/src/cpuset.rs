//! CPU lists in the kernel's and libvirt's text form ("0-3,8,10-11").

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// A set of CPU ids, printed and parsed in the kernel's list form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CpuSet(BTreeSet<u32>);

/// Why a CPU list could not be parsed; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {text:?}: {reason}")]
pub struct CpuSetError {
    /// The whole list as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Ranges wider than this are refused: no host has a million CPUs, and a typo such as
/// "0-4294967295" must not allocate a huge set.
const MAX_CPU_ID: u32 = 1 << 20;

impl CpuSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(&cpu)
    }

    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu);
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// CPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().copied()
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.intersection(&other.0).copied().collect())
    }

    /// CPUs of `self` that are not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        CpuSet(self.0.difference(&other.0).copied().collect())
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.0.is_subset(&other.0)
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuSet(iter.into_iter().collect())
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetError;

    /// Parses "0-3,8,10-11" (whitespace around items and a trailing newline are allowed; an
    /// empty string is the empty set, as in an empty sysfs cpulist).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CpuSetError {
            text: text.to_string(),
            reason,
        };
        let parse_id = |s: &str| -> Result<u32, CpuSetError> {
            let id: u32 = s
                .trim()
                .parse()
                .map_err(|_| err(format!("{s:?} is not a CPU number")))?;
            if id > MAX_CPU_ID {
                return Err(err(format!("CPU {id} is out of range")));
            }
            Ok(id)
        };
        let mut set = BTreeSet::new();
        for item in text
            .trim()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            match item.split_once('-') {
                Some((lo, hi)) => {
                    let (lo, hi) = (parse_id(lo)?, parse_id(hi)?);
                    if lo > hi {
                        return Err(err(format!("range {item:?} runs backwards")));
                    }
                    set.extend(lo..=hi);
                }
                None => {
                    set.insert(parse_id(item)?);
                }
            }
        }
        Ok(CpuSet(set))
    }
}

impl fmt::Display for CpuSet {
    /// Prints the compact list form, merging consecutive ids into ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut iter = self.0.iter().copied().peekable();
        let mut first = true;
        while let Some(lo) = iter.next() {
            let mut hi = lo;
            while iter.peek() == Some(&(hi + 1)) {
                hi += 1;
                iter.next();
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

impl serde::Serialize for CpuSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for CpuSet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_kernel_lists() {
        let set: CpuSet = "0-3,8,10-11\n".parse().unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(set.to_string(), "0-3,8,10-11");
        assert_eq!("".parse::<CpuSet>().unwrap(), CpuSet::new());
        assert_eq!(" 5 ".parse::<CpuSet>().unwrap().to_string(), "5");
    }

    #[test]
    fn rejects_garbage_naming_the_input() {
        let e = "0-x".parse::<CpuSet>().unwrap_err();
        assert_eq!(e.text, "0-x");
        assert!(e.to_string().contains("\"x\" is not a CPU number"), "{e}");
        assert!("3-1"
            .parse::<CpuSet>()
            .unwrap_err()
            .reason
            .contains("backwards"));
        assert!("0-4294967295".parse::<CpuSet>().is_err());
    }
}
