//! Which dumps to keep when a process has written more than OFFHEAP_KEEP.
//!
//! Never the first (what the process looked like at start) or the last; among the others the
//! one whose neighbours are closest in time goes, so the survivors stay evenly spread and a
//! long-running service keeps a picture of its whole life.

/// Index of the dump to delete among `times` (uptime of each dump still on disk, ascending),
/// or None when fewer than three are left.
pub fn victim(times: &[u64]) -> Option<usize> {
    if times.len() < 3 {
        return None;
    }
    (1..times.len() - 1).min_by_key(|&i| {
        let next = times.get(i + 1).copied().unwrap_or(0);
        let prev = times.get(i - 1).copied().unwrap_or(0);
        (next.saturating_sub(prev), i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keeps_first_and_last() {
        assert_eq!(victim(&[0, 10]), None);
        assert_eq!(victim(&[0, 5, 10]), Some(1));
    }

    #[test]
    fn drops_where_dumps_are_densest() {
        // 0, 10, 11, 12, 30: removing 11 leaves the smallest gap (10..12)
        assert_eq!(victim(&[0, 10, 11, 12, 30]), Some(2));
    }

    #[test]
    fn equal_gaps_give_up_the_oldest_middle_dump() {
        assert_eq!(victim(&[0, 10, 20, 30, 40]), Some(1));
        assert_eq!(
            victim(&[0, 10, 20, 25, 30]),
            Some(3),
            "20..30 is the smallest new gap"
        );
        assert_eq!(victim(&[]), None);
        assert_eq!(victim(&[7]), None);
    }

    #[test]
    fn dumps_at_the_same_time_go_first() {
        assert_eq!(victim(&[0, 50, 50, 50, 100]), Some(2), "50..50: a gap of 0");
        assert_eq!(victim(&[0, 0, 0, 100]), Some(1));
    }

    proptest! {
        /// The spec: an interior dump whose removal leaves the smallest new gap (between its
        /// neighbours), the oldest on ties.
        #[test]
        fn the_victim_leaves_the_smallest_gap(
            mut times in prop::collection::vec(0u64..1_000_000, 0..60)
        ) {
            times.sort_unstable();
            let got = victim(&times);
            if times.len() < 3 {
                prop_assert_eq!(got, None);
                return Ok(());
            }
            let i = got.unwrap();
            prop_assert!(i >= 1 && i <= times.len() - 2, "never the first or the last");
            let gap = |j: usize| times[j + 1] - times[j - 1];
            for j in 1..times.len() - 1 {
                prop_assert!(gap(j) >= gap(i), "{} leaves {} < {}", j, gap(j), gap(i));
                if j < i {
                    prop_assert!(gap(j) > gap(i), "an older dump with the same gap: {}", j);
                }
            }
        }

        /// Dumps arrive at irregular times and the dumper trims to `keep` after each, as
        /// `dump::dumper` does: the first and the newest always survive, never more than
        /// `keep` stay.
        #[test]
        fn trimming_after_every_dump_keeps_the_first_and_the_newest(
            steps in prop::collection::vec(1u64..10_000, 1..200),
            keep in 3usize..20,
        ) {
            let mut on_disk: Vec<u64> = Vec::new();
            let mut now = 0;
            let first = steps[0];
            for step in steps {
                now += step;
                on_disk.push(now);
                while on_disk.len() > keep {
                    let i = victim(&on_disk).unwrap();
                    on_disk.remove(i);
                }
                prop_assert!(on_disk.len() <= keep);
                prop_assert_eq!(on_disk[0], first);
                prop_assert_eq!(*on_disk.last().unwrap(), now);
            }
        }
    }

    proptest! {
        #[test]
        fn repeated_retention_stays_spread(n in 10usize..300, keep in 3usize..40) {
            let mut times: Vec<u64> = (0..n as u64).map(|i| i * 1000).collect();
            while times.len() > keep {
                let i = victim(&times).unwrap();
                prop_assert!(i > 0 && i < times.len() - 1);
                times.remove(i);
            }
            prop_assert_eq!(times[0], 0);
            prop_assert_eq!(*times.last().unwrap(), (n as u64 - 1) * 1000);
            // no gap more than four times the even spacing
            let even = (n as u64 - 1) * 1000 / (keep as u64 - 1);
            prop_assert!(times.windows(2).all(|w| w[1] - w[0] <= 4 * even.max(1000)));
        }
    }
}
