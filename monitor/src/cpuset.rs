//! CPU lists in the kernel's and libvirt's text form ("0-3,8,10-11").
//!
//! A set is kept as sorted, disjoint, non-adjacent ranges, so its memory grows with the
//! number of ranges in the text, never with the number of CPUs a range spans: "0-8191" is
//! one pair of numbers. CPU lists come from VM metadata that anyone with libvirt write access
//! sets, so a list is also refused past [`MAX_CPUS`].

mod text;

use std::cmp::Ordering;

pub use text::CpuSetError;

/// The most CPUs any kernel supports: `CONFIG_NR_CPUS` tops out at 8192 (x86_64 with
/// `MAXSMP`, powerpc; arm64 stops at 4096). A CPU id in a list is below this; callers that
/// know the host narrow it further with [`CpuSet::parse_within`] (its possible CPUs).
pub const MAX_CPUS: u32 = 8192;

/// A set of CPU ids, printed and parsed in the kernel's list form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct CpuSet {
    /// Inclusive `(first, last)` ranges, ascending, neither overlapping nor touching (so two
    /// equal sets have equal ranges, which the derived `Eq` and `Hash` rely on).
    ranges: Vec<(u32, u32)>,
}

impl CpuSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// CPUs `first` to `last`, inclusive (empty when `last < first`).
    pub fn from_range(first: u32, last: u32) -> CpuSet {
        let ranges = if last < first {
            Vec::new()
        } else {
            vec![(first, last)]
        };
        CpuSet { ranges }
    }

    /// The CPUs whose bits are set in `words`, bit `i` of word `w` being CPU `64 * w + i`:
    /// the layout of `cpu_set_t` and of the kernel's cpumasks. Visits set bits only.
    pub fn from_mask_words(words: &[u64]) -> CpuSet {
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        for (w, &word) in words.iter().enumerate() {
            let mut bits = word;
            while bits != 0 {
                let cpu = 64 * w as u32 + bits.trailing_zeros();
                match ranges.last_mut() {
                    Some(last) if last.1 + 1 == cpu => last.1 = cpu,
                    _ => ranges.push((cpu, cpu)),
                }
                bits &= bits - 1;
            }
        }
        CpuSet { ranges }
    }

    /// Whether `cpu` is in the set.
    pub fn contains(&self, cpu: u32) -> bool {
        self.range_index(cpu).is_ok()
    }

    /// Adds `cpu`.
    pub fn insert(&mut self, cpu: u32) {
        let Err(at) = self.range_index(cpu) else {
            return; // already in
        };
        let joins_prev = at > 0 && self.ranges[at - 1].1.checked_add(1) == Some(cpu);
        let joins_next = at < self.ranges.len() && cpu.checked_add(1) == Some(self.ranges[at].0);
        match (joins_prev, joins_next) {
            (true, true) => {
                self.ranges[at - 1].1 = self.ranges[at].1;
                self.ranges.remove(at);
            }
            (true, false) => self.ranges[at - 1].1 = cpu,
            (false, true) => self.ranges[at].0 = cpu,
            (false, false) => self.ranges.insert(at, (cpu, cpu)),
        }
    }

    /// Number of CPUs in the set.
    pub fn len(&self) -> usize {
        self.ranges
            .iter()
            .map(|&(lo, hi)| (hi - lo) as usize + 1)
            .sum()
    }

    /// Whether the set has no CPU.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// CPU ids in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.ranges.iter().flat_map(|&(lo, hi)| lo..=hi)
    }

    /// CPUs in both sets.
    pub fn intersection(&self, other: &CpuSet) -> CpuSet {
        let mut out = Vec::new();
        let (mut a, mut b) = (
            self.ranges.iter().peekable(),
            other.ranges.iter().peekable(),
        );
        while let (Some(&&(alo, ahi)), Some(&&(blo, bhi))) = (a.peek(), b.peek()) {
            let (lo, hi) = (alo.max(blo), ahi.min(bhi));
            if lo <= hi {
                out.push((lo, hi));
            }
            // Drop the range that ends first: it can overlap nothing further on.
            if ahi < bhi {
                a.next();
            } else {
                b.next();
            }
        }
        CpuSet { ranges: out }
    }

    /// CPUs of `self` that are not in `other`.
    pub fn difference(&self, other: &CpuSet) -> CpuSet {
        let mut out = Vec::new();
        let mut cut_by = other.ranges.iter().peekable();
        for &(lo, hi) in &self.ranges {
            let mut lo = Some(lo);
            while let (Some(start), Some(&&(clo, chi))) = (lo, cut_by.peek()) {
                if chi < start {
                    cut_by.next();
                    continue;
                }
                if clo > hi {
                    break;
                }
                if clo > start {
                    out.push((start, clo - 1));
                }
                // chi >= start; what is left starts after it (none if it reaches past hi).
                lo = chi.checked_add(1).filter(|&next| next <= hi);
                if chi <= hi {
                    cut_by.next();
                } else {
                    break;
                }
            }
            if let Some(start) = lo {
                out.push((start, hi));
            }
        }
        CpuSet { ranges: out }
    }

    /// Whether every CPU of `self` is in `other`.
    pub fn is_subset(&self, other: &CpuSet) -> bool {
        self.difference(other).is_empty()
    }

    /// `Ok(index)` of the range holding `cpu`, else `Err(index)` where a range for it goes.
    fn range_index(&self, cpu: u32) -> Result<usize, usize> {
        self.ranges.binary_search_by(|&(lo, hi)| {
            if hi < cpu {
                Ordering::Less
            } else if lo > cpu {
                Ordering::Greater
            } else {
                Ordering::Equal
            }
        })
    }

    /// The canonical set of possibly overlapping, unsorted inclusive ranges.
    fn from_ranges(mut ranges: Vec<(u32, u32)>) -> CpuSet {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u64::from(lo) <= u64::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        merged.shrink_to_fit();
        CpuSet { ranges: merged }
    }
}

/// Ordered as the ascending sequences of their CPU ids (as a `BTreeSet` of them would be).
impl Ord for CpuSet {
    fn cmp(&self, other: &Self) -> Ordering {
        self.iter().cmp(other.iter())
    }
}

impl PartialOrd for CpuSet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromIterator<u32> for CpuSet {
    fn from_iter<I: IntoIterator<Item = u32>>(iter: I) -> Self {
        CpuSet::from_ranges(iter.into_iter().map(|cpu| (cpu, cpu)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_words_give_the_set_bits_as_ranges() {
        let words = [0b1011_0001u64, 0, 1 << 63, 1, u64::MAX];
        let bits = |w: &[u64]| -> CpuSet {
            (0..64 * w.len() as u32)
                .filter(|&c| w[c as usize / 64] >> (c % 64) & 1 == 1)
                .collect()
        };
        assert_eq!(CpuSet::from_mask_words(&words), bits(&words));
        assert_eq!(
            CpuSet::from_mask_words(&words).to_string(),
            "0,4-5,7,191-192,256-319"
        );
        assert!(CpuSet::from_mask_words(&[0, 0]).is_empty());
    }

    #[test]
    fn set_operations_keep_ranges_canonical() {
        let cpus = |s: &str| s.parse::<CpuSet>().unwrap();
        let mut set = cpus("0,2");
        set.insert(1);
        assert_eq!((set.to_string(), set.ranges.len()), ("0-2".to_string(), 1));
        set.insert(4);
        set.insert(5);
        set.insert(3);
        assert_eq!(set, cpus("0-5"));
        assert_eq!(cpus("0-3,8-11").intersection(&cpus("2-9")), cpus("2-3,8-9"));
        assert_eq!(
            cpus("0-11").difference(&cpus("2-3,5,8-20")),
            cpus("0-1,4,6-7")
        );
        assert!(cpus("2-3").is_subset(&cpus("0-5")) && !cpus("2-6").is_subset(&cpus("0-5")));
        assert_eq!(cpus("3,1-2,2"), cpus("1-3"), "overlaps and disorder merge");
        // Ordered as sorted id sequences, as the BTreeSet it replaced.
        assert!(cpus("0,5") < cpus("1") && cpus("0") < cpus("0-1"));
        assert_eq!(CpuSet::from_iter([3, 1, 2, 9]).to_string(), "1-3,9");
    }
}
