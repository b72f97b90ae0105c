//! Grouping arithmetic: every figure of a dump row from known records.

use super::*;
use crate::table::live::{Record, Slot, FLAG_SAMPLED};
use proptest::prelude::*;

fn rec(stack: u32, size: u64, birth_ms: u32, generation: u16, epoch: u8) -> Record {
    Record::pack(&Slot {
        addr: 0x1000 + size,
        size,
        stack,
        generation,
        epoch,
        flags: 0,
        birth_ms,
    })
}

#[test]
fn fixed_counts_bytes_births_and_ages() {
    let run = [
        rec(2, 10, 500, 0, 0),
        rec(2, 20, 9_500, 1, 0),
        rec(2, 30, 70_000, 2, 1),
    ];
    let g = fixed(&run, 71_000, 0);
    assert_eq!(g.count, 3);
    assert_eq!(g.bytes, 60);
    assert_eq!((g.oldest_ms, g.newest_ms), (500, 70_000));
    // ages 70.5 s, 61.5 s, 1 s: two in [60 s, 10 min), one in [1 s, 10 s)
    assert_eq!(g.age_hist, [0, 1, 0, 2, 0, 0]);
    assert_eq!((g.est_count, g.est_bytes), (3.0, 60.0));
}

#[test]
fn sampled_records_weigh_one_over_their_probability() {
    let mut r = rec(2, 512 * 1024, 0, 0, 0);
    r.0[1] |= (FLAG_SAMPLED as u64) << 56;
    let g = fixed(&[r], 0, 512 * 1024);
    let p = 1.0 - (-1.0f64).exp();
    assert!((g.est_count - 1.0 / p).abs() < 1e-9);
    assert!((g.est_bytes - 512.0 * 1024.0 / p).abs() < 1e-6);
    assert_eq!(sample_weight(100, 0), 1.0);
}

#[test]
fn generations_widen_across_the_16_bit_wrap() {
    assert_eq!(widen_generation(5, 5), 5);
    assert_eq!(widen_generation(0xffff, 0x1_0001), 0xffff);
    assert_eq!(widen_generation(1, 0x1_0001), 0x1_0001);
    assert_eq!(
        widen_generation(3, 2),
        0,
        "a generation from the future saturates at 0"
    );
}

#[test]
fn generation_rows_of_a_sorted_run() {
    let run = [rec(2, 1, 0, 0, 0), rec(2, 2, 0, 0, 0), rec(2, 4, 0, 3, 0)];
    let mut out = Vec::new();
    generations(&run, 3, &mut out);
    assert_eq!(out, vec![(0, 2, 3), (3, 1, 4)]);
}

#[test]
fn epochs_are_counted_per_epoch() {
    let run = [rec(2, 1, 0, 0, 0), rec(2, 2, 0, 0, 2), rec(2, 4, 0, 0, 2)];
    let mut out = Vec::new();
    epochs(&run, &mut out);
    assert_eq!(out, vec![(0, 1, 1), (2, 2, 6)]);
}

#[test]
fn runs_split_on_key_changes() {
    let v = [1, 1, 2, 3, 3, 3];
    let r: Vec<&[i32]> = runs(&v, |x| *x).collect();
    assert_eq!(r, vec![&[1, 1][..], &[2][..], &[3, 3, 3][..]]);
    assert_eq!(runs(&[] as &[i32], |x| *x).count(), 0);
}

#[test]
fn snapshot_key_orders_by_stack_then_generation() {
    let a = rec(2, 1, 0, 9, 0);
    let b = rec(3, 1, 0, 1, 0);
    let c = rec(3, 1, 0, 2, 0);
    assert!(snapshot_key(&a, 10) < snapshot_key(&b, 10));
    assert!(snapshot_key(&b, 10) < snapshot_key(&c, 10));
}

#[test]
fn merging_keeps_the_first_row_exact_and_spreads_the_rest() {
    let mut rows: Vec<Detail> = (0..1000).map(|g| (g, 1, 10)).collect();
    merge_rows(&mut rows, 64);
    assert_eq!(rows.len(), 64);
    assert_eq!(rows[0], (0, 1, 10));
    assert_eq!(
        rows.last().unwrap().0,
        999,
        "the last row is keyed by the youngest generation"
    );
    // 999 generations into 63 equal ranges: 15 or 16 each
    for r in &rows[1..] {
        assert!(r.1 == 15 || r.1 == 16, "{r:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merged_rows_preserve_totals_order_and_the_cap(
        mut gens in prop::collection::btree_set(0u64..100_000, 0..400),
        max in 2usize..80,
    ) {
        let mut rows: Vec<Detail> = std::mem::take(&mut gens)
            .into_iter()
            .map(|g| (g, g % 7 + 1, g % 13 + 1))
            .collect();
        let before = rows.clone();
        merge_rows(&mut rows, max);
        prop_assert!(rows.len() <= max.max(before.len().min(max)));
        prop_assert_eq!(rows.iter().map(|r| r.1).sum::<u64>(), before.iter().map(|r| r.1).sum::<u64>());
        prop_assert_eq!(rows.iter().map(|r| r.2).sum::<u64>(), before.iter().map(|r| r.2).sum::<u64>());
        prop_assert!(rows.windows(2).all(|w| w[0].0 < w[1].0));
        if let (Some(a), Some(b)) = (rows.first(), before.first()) {
            prop_assert_eq!(a, b);
        }
        if let (Some(a), Some(b)) = (rows.last(), before.last()) {
            prop_assert_eq!(a.0, b.0);
        }
        if before.len() <= max {
            prop_assert_eq!(rows, before);
        }
    }

    #[test]
    fn fixed_matches_a_direct_count(sizes in prop::collection::vec((1u64..1 << 20, 0u32..4_000_000), 1..200), now in 4_000_000u64..8_000_000) {
        let run: Vec<Record> = sizes.iter().map(|&(s, b)| rec(2, s, b, 0, 0)).collect();
        let g = fixed(&run, now, 0);
        prop_assert_eq!(g.count, sizes.len() as u64);
        prop_assert_eq!(g.bytes, sizes.iter().map(|s| s.0).sum::<u64>());
        prop_assert_eq!(g.oldest_ms, sizes.iter().map(|s| s.1 as u64).min().unwrap());
        prop_assert_eq!(g.newest_ms, sizes.iter().map(|s| s.1 as u64).max().unwrap());
        prop_assert_eq!(g.age_hist.iter().sum::<u64>(), g.count);
    }
}

/// The documented merge, written the obvious way: the first row alone; every other row into
/// range ⌊(g − g₁)·(max − 1)/span⌋ of `max − 1` equal ranges over [g₁, g_last], each range
/// one row keyed by its youngest generation, with its counts and bytes summed.
fn merge_model(rows: &[Detail], max: usize) -> Vec<Detail> {
    if rows.len() <= max || max < 2 {
        return rows.to_vec();
    }
    let (g1, last) = (rows[1].0, rows[rows.len() - 1].0);
    let span = last - g1 + 1;
    let mut ranges: std::collections::BTreeMap<u64, Detail> = Default::default();
    for &(g, c, b) in &rows[1..] {
        let r = ranges
            .entry((g - g1) * (max as u64 - 1) / span)
            .or_insert((0, 0, 0));
        *r = (r.0.max(g), r.1 + c, r.2 + b);
    }
    std::iter::once(rows[0])
        .chain(ranges.into_values())
        .collect()
}

#[test]
fn merging_pools_rows_by_range_not_by_position() {
    // Generations 0, then 1..=4 crowded together and 100: two ranges over [1, 100],
    // [1, 50] and [51, 100], so 1..=4 pool into one row and 100 stays alone.
    let mut rows: Vec<Detail> = vec![
        (0, 9, 90),
        (1, 1, 1),
        (2, 1, 2),
        (3, 1, 3),
        (4, 1, 4),
        (100, 5, 50),
    ];
    merge_rows(&mut rows, 3);
    assert_eq!(rows, vec![(0, 9, 90), (4, 4, 10), (100, 5, 50)]);
}

#[test]
fn generations_of_a_long_run_are_capped_at_the_row_limit() {
    // 200 generations, one record each (sizes 1..=200), widened from 16 bits at 70 000.
    let run: Vec<Record> = (0..200u32)
        .map(|i| rec(2, i as u64 + 1, 0, (69_801 + i) as u16, 0))
        .collect();
    let mut out = Vec::new();
    generations(&run, 70_000, &mut out);
    assert_eq!(out.len(), MAX_GENERATION_ROWS);
    assert_eq!(out[0], (69_801, 1, 1));
    assert_eq!(out.last().unwrap().0, 70_000);
    assert_eq!(out.iter().map(|r| r.1).sum::<u64>(), 200);
    assert_eq!(out.iter().map(|r| r.2).sum::<u64>(), 200 * 201 / 2);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn merged_rows_match_the_model(
        gens in prop::collection::btree_set(0u64..5_000, 0..300),
        max in 0usize..70,
    ) {
        let mut rows: Vec<Detail> = gens.into_iter().map(|g| (g, g % 5 + 1, g * 3 + 1)).collect();
        let want = merge_model(&rows, max);
        merge_rows(&mut rows, max);
        prop_assert_eq!(rows, want);
    }
}
