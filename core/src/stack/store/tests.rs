//! The stack store against a map model: identical frame sequences share one id, ids are handed
//! out in order from 2, each keeps the frames and end it was first interned with, the bounds
//! (ids, arena, index load) turn new stacks into STORE_FULL and count them; stripes of
//! counters add up to the totals, take-backs included; stripe owners against a set model;
//! threads interning the same stacks at once agree on every id.

// The concurrency tests need real threads; the library's rule (raw pthreads with signals
// blocked) is about threads inside a host, not the test runner's.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

/// The smallest store `Store::new` makes: 1024 entries, an index of 2048 slots (twice the
/// capacity, rounded to a power of two), an arena of 1024 × 48 frames.
fn small() -> Store {
    Store::new(1).expect("the store's mappings")
}

/// Ids a small store hands out: from FIRST_ID (2) while `id < capacity` (1024) and
/// `id * 2 <= index_mask` (2047), so 2..=1023.
const SMALL_IDS: u32 = 1023 - 2 + 1;

#[test]
fn the_same_frames_get_the_same_id_and_new_ones_the_next() {
    let s = small();
    assert_eq!(s.id_limit(), 2, "ids 0 and 1 are reserved");
    let a = s.intern(&[0x10, 0x20, 0x30], End::Complete);
    let b = s.intern(&[0x10, 0x20], End::Complete);
    let c = s.intern(&[0x20, 0x10, 0x30], End::Truncated);
    assert_eq!((a, b, c), (2, 3, 4));
    assert_eq!(s.intern(&[0x10, 0x20, 0x30], End::Complete), 2);
    assert_eq!(
        s.intern(&[0x10, 0x20], End::Broken),
        3,
        "the end is not part of the key"
    );
    assert_eq!(s.id_limit(), 5);
    assert_eq!(s.frames(2), &[0x10, 0x20, 0x30]);
    assert_eq!(s.frames(3), &[0x10, 0x20]);
    assert_eq!(s.frames(4), &[0x20, 0x10, 0x30]);
    assert_eq!(
        s.entry(3).end,
        End::Complete as u8,
        "the first interning's end stays"
    );
    assert_eq!(s.entry(4).end, End::Truncated as u8);
    assert_eq!(s.dropped(), 0);
}

#[test]
fn the_reserved_ids_have_no_frames_and_no_counts() {
    let s = small();
    s.intern(&[1, 2, 3], End::Complete);
    for id in [NO_STACK, STORE_FULL] {
        assert_eq!(s.frames(id), &[] as &[u64]);
        let t = s.totals(id);
        assert_eq!(
            (t.allocs, t.frees, t.alloc_bytes, t.free_bytes),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn an_empty_stack_and_a_long_one_are_stacks_like_any_other() {
    let s = small();
    let long: Vec<u64> = (0..crate::stack::MAX_FRAMES_LIMIT as u64).collect();
    let e = s.intern(&[], End::Broken);
    let l = s.intern(&long, End::Truncated);
    assert_eq!((e, l), (2, 3));
    assert_eq!(s.intern(&[], End::Complete), 2);
    assert_eq!(s.frames(2), &[] as &[u64]);
    assert_eq!(s.frames(3), &long[..]);
}

#[test]
fn the_hash_depends_on_order_length_and_every_frame() {
    let base = [0x401000u64, 0x402000, 0x403000];
    let h = hash_frames(&base);
    assert_eq!(
        h & 1,
        1,
        "never 0, the index's empty mark, or any even value"
    );
    assert_ne!(h, hash_frames(&[0x402000, 0x401000, 0x403000]));
    assert_ne!(h, hash_frames(&base[..2]));
    assert_ne!(h, hash_frames(&[0x401000, 0x402000, 0x403000, 0]));
    for i in 0..3 {
        let mut v = base;
        v[i] ^= 1 << 12;
        assert_ne!(h, hash_frames(&v), "frame {i}");
    }
    assert_eq!(
        h,
        hash_frames(&[0x401000, 0x402000, 0x403000]),
        "a function of the frames alone"
    );
}

#[test]
fn stacks_sharing_an_index_slot_are_probed_past_each_other() {
    let s = small();
    // Stacks whose hash starts the probe at the same index slot (2048 slots: low 11 bits).
    let want = hash_frames(&[7]) & 2047;
    let same: Vec<Vec<u64>> = (0..1_000_000u64)
        .map(|f| vec![f])
        .filter(|v| hash_frames(v) & 2047 == want)
        .take(4)
        .collect();
    assert_eq!(same.len(), 4);
    let ids: Vec<u32> = same.iter().map(|v| s.intern(v, End::Complete)).collect();
    assert_eq!(ids, vec![2, 3, 4, 5]);
    for (v, &id) in same.iter().zip(&ids).rev() {
        assert_eq!(s.intern(v, End::Complete), id);
        assert_eq!(s.frames(id), &v[..]);
    }
    assert_eq!(s.id_limit(), 6);
}

#[test]
fn past_its_last_id_the_store_answers_full_and_counts_what_it_dropped() {
    let s = small();
    for i in 0..SMALL_IDS as u64 {
        assert_eq!(s.intern(&[i], End::Complete), 2 + i as u32);
    }
    assert_eq!(s.id_limit(), 1024);
    assert_eq!(s.intern(&[1 << 40], End::Complete), STORE_FULL);
    assert_eq!(s.intern(&[1 << 41], End::Complete), STORE_FULL);
    assert_eq!(s.dropped(), 2);
    assert_eq!(s.id_limit(), 1024, "nothing was added");
    assert_eq!(
        s.intern(&[5], End::Complete),
        7,
        "known stacks are still found"
    );
    assert_eq!(s.dropped(), 2);
}

#[test]
fn a_full_arena_refuses_new_stacks_before_the_ids_run_out() {
    let s = small();
    // 256-frame stacks: the 49 152-frame arena holds exactly 192 of them.
    let stack = |i: u64| -> Vec<u64> { (0..256).map(|f| i << 16 | f).collect() };
    for i in 0..192 {
        assert_eq!(s.intern(&stack(i), End::Complete), 2 + i as u32);
    }
    assert_eq!(s.intern(&stack(192), End::Complete), STORE_FULL);
    assert_eq!(s.dropped(), 1);
    assert_eq!(
        s.intern(&[1], End::Complete),
        STORE_FULL,
        "the arena is full to the frame"
    );
    assert_eq!(
        s.intern(&[], End::Complete),
        194,
        "an empty stack needs no arena"
    );
    assert_eq!(s.frames(193), &stack(191)[..]);
}

#[test]
fn broken_counts_stacks_whose_walk_broke() {
    let s = small();
    s.intern(&[1], End::Broken);
    s.intern(&[2], End::Complete);
    s.intern(&[3], End::Broken);
    s.intern(&[4], End::Truncated);
    s.intern(&[1], End::Complete);
    assert_eq!(s.broken(), 2);
}

#[test]
fn bytes_used_follows_ids_frames_and_the_index() {
    let s = small();
    // Entry: u64 + u32 + u16 + u8 + u8 = 16 bytes; Counters: 4 × u64 = 32 bytes per stripe,
    // the shared one for every id, an exclusive one (once mapped) for the exclusive ids in use.
    assert_eq!(core::mem::size_of::<Entry>(), 16);
    assert_eq!(core::mem::size_of::<Counters>(), 32);
    let per_id = 16 + 32;
    assert_eq!(s.bytes_used(), 2 * per_id + 2048 * 4);
    s.intern(&[1, 2, 3], End::Complete);
    s.intern(&[4, 5], End::Complete);
    s.intern(&[1, 2, 3], End::Complete);
    assert_eq!(s.bytes_used(), 4 * per_id + 5 * 8 + 2048 * 4);
    s.counters(3, 5).add_allocs(1, 1);
    s.counters(2, 9).add_allocs(1, 1);
    assert_eq!(
        s.bytes_used(),
        4 * per_id + 2 * 4 * 32 + 5 * 8 + 2048 * 4,
        "two exclusive stripes, each holding the 4 ids in use"
    );
}

#[test]
fn stripes_add_up_to_the_totals() {
    let s = small();
    let id = s.intern(&[9], End::Complete);
    s.counters(id, 0).add_allocs(3, 300);
    s.counters(id, 1).add_allocs(2, 20);
    s.counters(id, 7).add_allocs(1, 1);
    s.counters(id, STRIPES as u32 - 1).add_allocs(5, 5000);
    s.counters(id, 1).add_frees(1, 10);
    s.counters(id, 0).add_frees(2, 200);
    let t = s.totals(id);
    assert_eq!(
        (t.allocs, t.frees, t.alloc_bytes, t.free_bytes),
        (11, 3, 5321, 210)
    );
    let other = s.totals(s.intern(&[10], End::Complete));
    assert_eq!(
        (other.allocs, other.frees),
        (0, 0),
        "counts stay with their stack"
    );
}

#[test]
fn ids_past_the_exclusive_ones_count_in_the_shared_stripe_and_total_exactly() {
    let s = Store::new(EXCLUSIVE_IDS + 100).expect("the store's mappings");
    let mut last = 0;
    for i in 0..EXCLUSIVE_IDS as u64 + 10 {
        last = s.intern(&[i], End::Complete);
    }
    let (inside, past) = (EXCLUSIVE_IDS as u32 - 1, EXCLUSIVE_IDS as u32);
    assert!(last > past, "ids reach past the exclusive ones");
    std::thread::scope(|sc| {
        for stripe in [3u32, 4] {
            let s = &s;
            sc.spawn(move || {
                let first = s.exclusive_counters(stripe);
                for _ in 0..10_000 {
                    // SAFETY: `first` is this thread's stripe's own counters.
                    unsafe { s.counters_from(inside, stripe, first) }.add_allocs(1, 2);
                    // SAFETY: as above.
                    unsafe { s.counters_from(past, stripe, first) }.add_allocs(1, 3);
                    s.counters(last, stripe).add_frees(1, 5);
                }
            });
        }
    });
    assert!(
        s.counters(inside, 3).exclusive,
        "an exclusive id in an exclusive stripe"
    );
    for id in [past, last] {
        assert!(
            !s.counters(id, 3).exclusive,
            "id {id} counts in the shared stripe"
        );
    }
    let t = |id| {
        let t = s.totals(id);
        (t.allocs, t.alloc_bytes, t.frees, t.free_bytes)
    };
    assert_eq!(t(inside), (20_000, 40_000, 0, 0));
    assert_eq!(t(past), (20_000, 60_000, 0, 0));
    assert_eq!(t(last), (0, 0, 20_000, 100_000));
    let ids = s.id_limit() as usize;
    let per_id = 16 + 32;
    assert_eq!(
        s.bytes_used(),
        ids * per_id + 2 * EXCLUSIVE_IDS * 32 + (ids - 2) * 8 + (s.index_mask + 1) * 4,
        "two stripes' exclusive counters, whatever the ids past them"
    );
}

#[test]
fn summing_a_window_agrees_with_each_ids_totals_wherever_the_window_lies() {
    let cap = EXCLUSIVE_IDS + 8;
    let s = Store::new(cap).expect("the store's mappings");
    for i in 0..cap as u64 {
        if s.intern(&[i], End::Complete) == STORE_FULL {
            break;
        }
    }
    let ids = s.id_limit() as usize;
    assert!(
        ids > EXCLUSIVE_IDS + 2,
        "ids reach past the exclusive ones: {ids}"
    );
    for id in EXCLUSIVE_IDS - 3..ids {
        let id = id as u32;
        s.counters(id, 0).add_allocs(1, 10);
        s.counters(id, 3).add_allocs(2, 20);
        s.counters(id, 200).add_frees(1, id as u64);
    }
    // Windows straddling the exclusive ids' end, past the ids in use, and past capacity.
    for first in [EXCLUSIVE_IDS - 2, EXCLUSIVE_IDS, ids - 1, cap - 1, cap + 5] {
        let mut out = [[0u64; 4]; 4];
        s.sum_range(first, &mut out);
        for (i, got) in out.iter().enumerate() {
            let id = first + i;
            let want = if id < cap {
                let t = s.totals(id as u32);
                [t.allocs, t.frees, t.alloc_bytes, t.free_bytes]
            } else {
                [0; 4]
            };
            assert_eq!(*got, want, "id {id} in the window from {first}");
            if (EXCLUSIVE_IDS - 3..ids).contains(&id) {
                assert_eq!(*got, [3, 1, 30, id as u64], "id {id}'s own counts");
            }
        }
    }
}

#[test]
fn stripe_numbers_wrap_at_the_stripe_count() {
    let s = small();
    let id = s.intern(&[9], End::Complete);
    s.counters(id, STRIPES as u32).add_allocs(1, 8);
    s.counters(id, STRIPES as u32 + 3).add_allocs(1, 8);
    assert_eq!(s.counters(id, 0).allocs.load(Ordering::Relaxed), 1);
    assert_eq!(s.counters(id, 3).allocs.load(Ordering::Relaxed), 1);
}

#[test]
fn a_free_taken_back_in_another_stripe_still_totals_exactly() {
    let s = small();
    let id = s.intern(&[9], End::Complete);
    s.counters(id, 2).add_allocs(1, 64);
    s.counters(id, 2).add_frees(1, 64);
    // A failed realloc puts the block back: minus one free, counted by another thread.
    s.counters(id, 5)
        .add_frees(1u64.wrapping_neg(), 64u64.wrapping_neg());
    let t = s.totals(id);
    assert_eq!(
        (t.allocs, t.frees, t.alloc_bytes, t.free_bytes),
        (1, 0, 64, 0)
    );
}

#[test]
fn shared_stripe_counts_from_many_threads_are_not_lost() {
    let s = small();
    let id = s.intern(&[9], End::Complete);
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                for _ in 0..10_000 {
                    s.counters(id, 0).add_allocs(1, 3);
                }
            });
        }
    });
    let t = s.totals(id);
    assert_eq!((t.allocs, t.alloc_bytes), (40_000, 120_000));
}

#[test]
fn threads_interning_the_same_stacks_agree_on_every_id() {
    let s = small();
    let stacks: Vec<Vec<u64>> = (0..300u64).map(|i| vec![i, i * 3, 0x7000 + i]).collect();
    let seen: Vec<Vec<u32>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..4usize)
            .map(|t| {
                let (s, stacks) = (&s, &stacks);
                sc.spawn(move || {
                    // Each thread in its own order (a step coprime to 300 visits every
                    // stack once); the answer is reported in stack order.
                    let step = [1, 7, 11, 13][t];
                    let mut ids = vec![0u32; stacks.len()];
                    for k in 0..stacks.len() {
                        let i = (k * step + t * 77) % stacks.len();
                        ids[i] = s.intern(&stacks[i], End::Complete);
                    }
                    ids
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ids in &seen[1..] {
        assert_eq!(ids, &seen[0]);
    }
    let distinct: BTreeSet<u32> = seen[0].iter().copied().collect();
    assert_eq!(distinct.len(), 300);
    assert_eq!(distinct.iter().copied().min(), Some(2));
    assert_eq!(distinct.iter().copied().max(), Some(301));
    assert_eq!(s.id_limit(), 302);
    for (v, &id) in stacks.iter().zip(&seen[0]) {
        assert_eq!(s.frames(id), &v[..]);
    }
}

#[test]
fn stripe_owners_hand_out_each_exclusive_stripe_once() {
    let o = StripeOwners::new();
    let got: Vec<Option<u32>> = (0..STRIPES).map(|_| o.claim()).collect();
    let want: Vec<Option<u32>> = (1..STRIPES as u32).map(Some).chain([None]).collect();
    assert_eq!(
        got, want,
        "stripes 1..STRIPES in order, then none: stripe 0 is shared"
    );
    let all: Vec<u32> = (1..STRIPES as u32).collect();
    assert_eq!(o.owned().collect::<Vec<_>>(), all);
    o.release(4);
    o.release(130);
    assert_eq!(o.claim(), Some(4));
    assert_eq!(o.claim(), Some(130), "the lowest free first, in any word");
    o.release(0);
    o.release(STRIPES as u32);
    assert_eq!(
        o.owned().collect::<Vec<_>>(),
        all,
        "the shared stripe and out-of-range ones are no-ops"
    );
}

#[test]
fn a_forked_child_keeps_only_its_threads_stripe() {
    let o = StripeOwners::new();
    for _ in 0..5 {
        o.claim();
    }
    o.keep_only(3);
    assert_eq!(o.owned().collect::<Vec<_>>(), [3]);
    assert_eq!(o.claim(), Some(1));
    o.keep_only(STRIPES as u32 - 1);
    assert_eq!(o.owned().collect::<Vec<_>>(), [STRIPES as u32 - 1]);
    o.keep_only(0);
    assert_eq!(
        o.owned().count(),
        0,
        "a thread on the shared stripe keeps nothing"
    );
}

#[test]
fn threads_claiming_at_once_never_share_a_stripe() {
    let o = StripeOwners::new();
    // All but the last seven exclusive stripes are taken: twelve threads race for seven.
    for _ in 0..STRIPES - 8 {
        o.claim();
    }
    let got: Vec<Option<u32>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..12).map(|_| sc.spawn(|| o.claim())).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let owned: Vec<u32> = got.iter().flatten().copied().collect();
    let distinct: BTreeSet<u32> = owned.iter().copied().collect();
    assert_eq!(owned.len(), 7, "seven exclusive stripes for twelve threads");
    assert_eq!(distinct, (STRIPES as u32 - 7..STRIPES as u32).collect());
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 5);
}

#[derive(Debug, Clone)]
enum OwnerOp {
    Claim,
    Release(u32),
    KeepOnly(u32),
}

fn owner_op() -> impl Strategy<Value = OwnerOp> {
    prop_oneof![
        4 => Just(OwnerOp::Claim),
        3 => prop_oneof![0u32..10, 60u32..70].prop_map(OwnerOp::Release),
        1 => prop_oneof![0u32..10, 60u32..70].prop_map(OwnerOp::KeepOnly),
    ]
}

#[derive(Debug, Clone)]
enum StoreOp {
    Intern(Vec<u64>, u8),
    Alloc(usize, u32, u64),
    Free(usize, u32, u64),
}

fn store_op() -> impl Strategy<Value = StoreOp> {
    prop_oneof![
        3 => (prop::collection::vec(0u64..6, 0..5), 0u8..3)
            .prop_map(|(f, e)| StoreOp::Intern(f, e)),
        2 => (0usize..64, 0u32..16, 0u64..1 << 20)
            .prop_map(|(k, s, b)| StoreOp::Alloc(k, s, b)),
        1 => (0usize..64, 0u32..16, 0u64..1 << 20)
            .prop_map(|(k, s, b)| StoreOp::Free(k, s, b)),
    ]
}

fn end_of(e: u8) -> End {
    match e {
        0 => End::Complete,
        1 => End::Truncated,
        _ => End::Broken,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn stripe_owners_match_a_set(ops in prop::collection::vec(owner_op(), 1..100)) {
        let o = StripeOwners::new();
        let mut model = BTreeSet::new();
        for op in ops {
            match op {
                OwnerOp::Claim => {
                    let want = (1..STRIPES as u32).find(|s| !model.contains(s));
                    if let Some(s) = want {
                        model.insert(s);
                    }
                    prop_assert_eq!(o.claim(), want);
                }
                OwnerOp::Release(s) => {
                    model.remove(&s);
                    o.release(s);
                }
                OwnerOp::KeepOnly(s) => {
                    model.clear();
                    if (1..STRIPES as u32).contains(&s) {
                        model.insert(s);
                    }
                    o.keep_only(s);
                }
            }
            prop_assert_eq!(o.owned().collect::<BTreeSet<_>>(), model.clone());
        }
    }

    /// Interning and counting against a map of frames → (id, first end) and per-stack sums.
    #[test]
    fn interning_and_counting_match_a_map(ops in prop::collection::vec(store_op(), 1..200)) {
        let s = small();
        let mut ids: BTreeMap<Vec<u64>, (u32, u8)> = BTreeMap::new();
        let mut order: Vec<u32> = Vec::new();
        let mut sums: BTreeMap<u32, [u64; 4]> = BTreeMap::new();
        for op in ops {
            match op {
                StoreOp::Intern(frames, e) => {
                    let next = ids.len() as u32 + 2;
                    let (want, _) = *ids.entry(frames.clone()).or_insert_with(|| {
                        order.push(next);
                        (next, end_of(e) as u8)
                    });
                    prop_assert_eq!(s.intern(&frames, end_of(e)), want);
                }
                StoreOp::Alloc(k, stripe, bytes) | StoreOp::Free(k, stripe, bytes) => {
                    let Some(&id) = order.get(k % order.len().max(1)) else { continue };
                    let free = matches!(op, StoreOp::Free(..));
                    let c = s.counters(id, stripe);
                    let sum = sums.entry(id).or_default();
                    if free {
                        c.add_frees(1, bytes);
                        sum[1] += 1;
                        sum[3] += bytes;
                    } else {
                        c.add_allocs(1, bytes);
                        sum[0] += 1;
                        sum[2] += bytes;
                    }
                }
            }
        }
        prop_assert_eq!(s.id_limit(), ids.len() as u32 + 2);
        for (frames, &(id, end)) in &ids {
            prop_assert_eq!(s.frames(id), &frames[..]);
            prop_assert_eq!(s.entry(id).end, end);
            let t = s.totals(id);
            let want = sums.get(&id).copied().unwrap_or_default();
            prop_assert_eq!([t.allocs, t.frees, t.alloc_bytes, t.free_bytes], want);
        }
        let broken = ids.values().filter(|v| v.1 == End::Broken as u8).count() as u64;
        prop_assert_eq!(s.broken(), broken);
        prop_assert_eq!(s.dropped(), 0);
    }
}

#[test]
fn a_budget_gives_the_largest_store_that_fits_it() {
    let default = 262_144;
    // Unlimited budget: what was asked for.
    assert_eq!(Store::capacity_within(usize::MAX, default), default);
    // A budget: the answer fits, one more stack would not (or the answer is what was asked).
    for budget in [1 << 20, 6 << 20, 12 << 20, 25 << 20, 61 << 20, 100 << 20] {
        let n = Store::capacity_within(budget, default);
        assert!(
            Store::reserved_bytes(n) <= budget,
            "{n} stacks in {budget} bytes"
        );
        assert!(
            n == default || Store::reserved_bytes(n + 1) > budget,
            "{n} stacks in {budget} bytes: {} would fit too",
            n + 1
        );
    }
    // Below the smallest store: the smallest store (a library with no stacks at all is no use).
    assert_eq!(Store::capacity_within(4096, default), MIN_CAPACITY);
    let store = Store::new(5000).expect("a small store");
    assert_eq!(store.capacity(), 5000);
}
