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
