//! The run time a new reading of one thread adds, by CPU, such that the thread's counted
//! total never runs ahead of its real one.
//!
//! A reading adds the stint in progress on the CPU the thread was last seen on; if that stint
//! is later counted by the probes on another CPU (a switch the tracepoint did not show, then
//! a move), the first CPU's figure drops back and the second's grows by the same amount.
//! Counting per CPU only what grew would count that stint twice; so what dropped is owed and
//! taken off what grows next. Without drops this is plain per-CPU growth.

/// Nanoseconds to add per CPU (index) for the move from `last` to `current`, each a run time
/// per CPU; `owed` carries what was counted ahead from one reading to the next.
pub fn run_deltas(last: &[u64], current: &[u64], owed: &mut u64) -> Vec<u64> {
    let at = |v: &[u64], cpu: usize| v.get(cpu).copied().unwrap_or(0);
    let cpus = last.len().max(current.len());
    let grew: Vec<u64> = (0..cpus)
        .map(|c| at(current, c).saturating_sub(at(last, c)))
        .collect();
    let dropped: u64 = (0..cpus)
        .map(|c| at(last, c).saturating_sub(at(current, c)))
        .sum();
    *owed += dropped;
    let growth: u64 = grew.iter().sum();
    let paid = growth.min(*owed);
    *owed -= paid;
    if paid == 0 {
        return grew;
    }
    // Take what is owed off each CPU's growth in proportion, the rounding remainder off the
    // first CPUs that grew, so the sum added is exactly growth - paid.
    let keep = growth - paid;
    let mut out: Vec<u64> = grew
        .iter()
        .map(|&g| (u128::from(g) * u128::from(keep) / u128::from(growth)) as u64)
        .collect();
    let mut short = keep - out.iter().sum::<u64>();
    for (o, &g) in out.iter_mut().zip(&grew) {
        if short == 0 {
            break;
        }
        if *o < g {
            *o += 1;
            short -= 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::run_deltas;

    #[test]
    fn growth_on_each_cpu_is_added_as_it_is() {
        let mut owed = 0;
        assert_eq!(run_deltas(&[10, 20], &[15, 20], &mut owed), [5, 0]);
        assert_eq!(run_deltas(&[], &[3, 4], &mut owed), [3, 4]);
        assert_eq!(owed, 0);
    }

    #[test]
    fn a_stint_moved_to_another_cpu_is_counted_once() {
        // Reading 1 counted a 7 ns stint in progress on CPU 0; the probes then counted it on
        // CPU 1 (the thread was next seen there): CPU 0 drops by 7, CPU 1 grows by 7.
        let mut owed = 0;
        let total: u64 = [
            run_deltas(&[100, 50], &[107, 50], &mut owed),
            run_deltas(&[107, 50], &[100, 57], &mut owed),
            run_deltas(&[100, 57], &[100, 60], &mut owed),
        ]
        .iter()
        .flatten()
        .sum();
        assert_eq!(total, 10, "the thread ran 10 ns in all (150 -> 160)");
        assert_eq!(owed, 0);
    }

    #[test]
    fn a_dip_is_owed_until_the_thread_grows_past_it() {
        let mut owed = 0;
        assert_eq!(run_deltas(&[10], &[8], &mut owed), [0]);
        assert_eq!(owed, 2);
        assert_eq!(run_deltas(&[8], &[9], &mut owed), [0]);
        assert_eq!(run_deltas(&[9], &[15], &mut owed), [5]);
        assert_eq!(owed, 0);
    }

    #[test]
    fn what_is_owed_comes_off_every_cpu_that_grew_and_sums_exactly() {
        let mut owed = 5;
        let out = run_deltas(&[0, 0, 0], &[3, 3, 4], &mut owed);
        assert_eq!(out.iter().sum::<u64>(), 5);
        assert!(out.iter().zip([3, 3, 4]).all(|(o, g)| *o <= g), "{out:?}");
        assert_eq!(owed, 0);
    }
}
