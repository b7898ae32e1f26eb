//! A CPU list's text form: parsing "0-3,8,10-11" (bounded by [`MAX_CPUS`], errors that name
//! the list), printing it, and serde through it.

use std::fmt;
use std::str::FromStr;

use super::{CpuSet, MAX_CPUS};

/// Why a CPU list could not be parsed; carries the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CPU list {text:?}: {reason}")]
pub struct CpuSetError {
    /// The whole list as given.
    pub text: String,
    /// What is wrong with it.
    pub reason: String,
}

impl CpuSet {
    /// Parses a list and refuses CPUs that are not in `possible` (the host's possible CPUs,
    /// topology's `possible_cpus`), naming them.
    pub fn parse_within(text: &str, possible: &CpuSet) -> Result<CpuSet, CpuSetError> {
        let set: CpuSet = text.parse()?;
        let impossible = set.difference(possible);
        if impossible.is_empty() {
            return Ok(set);
        }
        Err(CpuSetError {
            text: cut(text),
            reason: format!("CPUs {impossible} are not among the host's possible CPUs {possible}"),
        })
    }
}

/// The text for an error message: a hostile list may be megabytes long.
fn cut(text: &str) -> String {
    const SHOWN: usize = 128;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}... ({} bytes)", &text[..end], text.len()),
        None => text.to_string(),
    }
}

impl FromStr for CpuSet {
    type Err = CpuSetError;

    /// Parses "0-3,8,10-11" (whitespace around items and a trailing newline are allowed; an
    /// empty string is the empty set, as in an empty sysfs cpulist). CPU ids must be below
    /// [`MAX_CPUS`].
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| CpuSetError {
            text: cut(text),
            reason,
        };
        let parse_id = |s: &str| -> Result<u32, CpuSetError> {
            let s = s.trim();
            // u32's parser takes a leading '+', which no CPU list has.
            let id = Some(s)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u32>().ok())
                .ok_or_else(|| err(format!("{:?} is not a CPU number", cut(s))))?;
            if id >= MAX_CPUS {
                return Err(err(format!(
                    "CPU {id} is out of range (CPU ids are below {MAX_CPUS}, the kernel's \
                     largest NR_CPUS)"
                )));
            }
            Ok(id)
        };
        let mut ranges = Vec::new();
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
                        return Err(err(format!("range {:?} runs backwards", cut(item))));
                    }
                    ranges.push((lo, hi));
                }
                None => {
                    let id = parse_id(item)?;
                    ranges.push((id, id));
                }
            }
        }
        Ok(CpuSet::from_ranges(ranges))
    }
}

impl fmt::Display for CpuSet {
    /// Prints the compact list form, consecutive ids as ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
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
        assert!("+3".parse::<CpuSet>().is_err(), "no sign in a CPU list");
    }

    /// The metadata bomb of issue 11: "0-1048575" was a million-entry set per attribute.
    #[test]
    fn refuses_ids_past_the_kernels_largest_nr_cpus() {
        let e = "0-1048575".parse::<CpuSet>().unwrap_err();
        assert!(e.reason.contains("CPU 1048575 is out of range"), "{e}");
        assert!(e.reason.contains("8192"), "{e}");
        let widest: CpuSet = "0-8191".parse().unwrap();
        assert_eq!(widest.len(), 8192);
        assert_eq!(widest.ranges.len(), 1, "one range whatever its width");
        assert!("8192".parse::<CpuSet>().is_err());
    }

    #[test]
    fn long_garbage_is_cut_in_the_message() {
        let text = "x".repeat(100_000);
        let e = text.parse::<CpuSet>().unwrap_err();
        assert!(e.to_string().len() < 1_000, "{} bytes", e.to_string().len());
        assert!(e.text.contains("(100000 bytes)"), "{}", e.text);
    }

    #[test]
    fn within_the_hosts_possible_cpus() {
        let possible: CpuSet = "0-3".parse().unwrap();
        assert_eq!(
            CpuSet::parse_within("1-2", &possible).unwrap().to_string(),
            "1-2"
        );
        let e = CpuSet::parse_within("2-5,7", &possible).unwrap_err();
        assert!(
            e.reason
                .contains("CPUs 4-5,7 are not among the host's possible CPUs 0-3"),
            "{e}"
        );
    }
}
