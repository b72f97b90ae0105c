//! Sampling: gaps against the exponential distribution they are drawn from (mean, tail, the
//! bounds the 53-bit uniform allows), and the filter against a multiset of live sampled
//! addresses (never a false "not sampled", exact counts below saturation, a saturated
//! counter never forgets).

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const DRAWS: usize = 200_000;

fn gaps(seed: u64, mean: u64) -> Vec<u64> {
    let mut rng = seed;
    (0..DRAWS).map(|_| next_gap(&mut rng, mean)).collect()
}

#[test]
fn gaps_average_the_mean() {
    // Exponential: standard deviation = mean, so the mean of 200 000 draws is within
    // mean × 1 % with a margin of 4.5 standard errors (0.22 % each); +1 shifts it by 1 byte.
    for (seed, mean) in [(1u64, 512 * 1024u64), (0x9E37_79B9, 4096), (12345, 100)] {
        let g = gaps(seed, mean);
        let avg = g.iter().map(|&v| v as f64).sum::<f64>() / DRAWS as f64;
        let want = mean as f64 + 0.5;
        assert!((avg - want).abs() < want * 0.01, "mean {mean}: {avg}");
    }
}

#[test]
fn gaps_have_an_exponential_tail() {
    // P(gap > k·mean) = exp(−k): 0.368 for k = 1, 0.0498 for k = 3 (± 0.005 is over 4 σ).
    let mean = 1 << 20;
    let g = gaps(7, mean);
    for (k, p) in [(1.0f64, (-1.0f64).exp()), (3.0, (-3.0f64).exp())] {
        let above = g.iter().filter(|&&v| v as f64 > k * mean as f64).count() as f64;
        assert!(
            (above / DRAWS as f64 - p).abs() < 0.005,
            "k = {k}: {}",
            above / DRAWS as f64
        );
    }
}

#[test]
fn gaps_are_at_least_one_and_bounded_by_the_smallest_uniform() {
    // u ≥ 0.5 / 2^53, so −ln u ≤ ln(2^54) = 37.43: no gap is infinite or 0.
    let mean = 1000;
    let bound = (54.0 * 2f64.ln() * mean as f64) as u64 + 1;
    for g in gaps(3, mean) {
        assert!((1..=bound).contains(&g), "{g}");
    }
    assert!(
        gaps(5, 0).iter().all(|&g| g == 1),
        "mean 0: every allocation"
    );
}

#[test]
fn the_rng_moves_on_and_is_a_function_of_its_state() {
    let (mut a, mut b) = (42u64, 42u64);
    let x: Vec<u64> = (0..100).map(|_| next_gap(&mut a, 1 << 16)).collect();
    let y: Vec<u64> = (0..100).map(|_| next_gap(&mut b, 1 << 16)).collect();
    assert_eq!(x, y);
    assert_ne!(a, 42);
    let distinct: std::collections::BTreeSet<u64> = x.iter().copied().collect();
    assert!(
        distinct.len() > 95,
        "{} distinct gaps of 100",
        distinct.len()
    );
}

#[test]
fn ln_unit_matches_libm_over_the_uniforms_a_gap_draws() {
    // The smallest u a draw makes (0.5 / 2^53), powers of two (exactly e·ln 2), both sides of
    // √2 where the mantissa folds, and a sweep of (0, 1].
    let smallest = 0.5 / (1u64 << 53) as f64;
    let mut us = vec![
        smallest,
        1.0,
        0.5,
        0.25,
        1.0 / 1024.0,
        core::f64::consts::FRAC_1_SQRT_2.next_down(),
        core::f64::consts::FRAC_1_SQRT_2,
        core::f64::consts::FRAC_1_SQRT_2.next_up(),
    ];
    us.extend((1..=100_000u64).map(|k| k as f64 / 100_000.0));
    us.extend((0..53).map(|e| 1.999_999 / (2u64 << e) as f64));
    for u in us {
        let (ours, libm) = (ln_unit(u), u.ln());
        assert!((ours - libm).abs() < 1e-9, "u = {u:e}: {ours} vs {libm}");
    }
}

/// The smallest filter: one group of 64 slots.
type Small = Filter<1, 1>;

/// An address other than `addr` that maps to the same slot.
fn colliding<const G: usize, const W: usize>(f: &Filter<G, W>, addr: u64) -> u64 {
    (1..)
        .map(|k| addr + k * 16)
        .find(|&a| f.index(a) == f.index(addr))
        .unwrap()
}

#[test]
fn full_tracking_says_maybe_for_every_block() {
    let f: Filter<4, 256> = Filter::new();
    assert!(!f.maybe_sampled(0x1000), "empty: nothing is tracked yet");
    f.maybe_everywhere();
    assert!(f.maybe_sampled(0x1000));
    assert!(f.maybe_sampled(0xdead_beef_0000));
    assert!((0..100_000u64).all(|k| f.maybe_sampled(0x7f00_0000_0000 + k * 16)));
}

#[test]
fn a_noted_block_is_maybe_sampled_until_it_is_freed() {
    let f: Filter<4, 256> = Filter::new();
    assert!(
        !f.maybe_sampled(0x7f00_0000_1000),
        "an empty filter knows nothing"
    );
    f.note(0x7f00_0000_1000, true);
    assert!(f.maybe_sampled(0x7f00_0000_1000));
    assert!(
        f.maybe_sampled(0x7f00_0000_100f),
        "the same 16-byte granule"
    );
    f.note(0x7f00_0000_1000, false);
    assert!(!f.maybe_sampled(0x7f00_0000_1000));
    f.note(0x7f00_0000_1000, false);
    assert!(
        !f.maybe_sampled(0x7f00_0000_1000),
        "a free too many does not wrap to 65535"
    );
    f.note(0x7f00_0000_1000, true);
    assert!(f.maybe_sampled(0x7f00_0000_1000));
}

#[test]
fn slots_are_words_times_64() {
    assert_eq!(Small::SLOT_MASK, 63);
    assert_eq!(Filter::<64, 256>::SLOT_MASK, (1 << 14) - 1);
    let f: Filter<2, 4> = Filter::new();
    let slots: std::collections::BTreeSet<(usize, usize)> =
        (0..10_000u64).map(|k| f.index(0x5000 + k * 16)).collect();
    assert_eq!(slots.len(), 256, "every slot is reached, none beyond");
    assert!(slots.iter().all(|&(g, _)| g == 0), "one window: one group");
}

#[test]
fn each_64_mib_window_has_its_group_modulo_the_groups() {
    const WINDOW: u64 = 64 << 20;
    let f: Filter<4, 4> = Filter::new();
    let base = 0x7f00_0000_0000u64; // window number ≡ 0 (mod 4)
    for w in 0..9u64 {
        let (g, _) = f.index(base + w * WINDOW + 0x1230);
        assert_eq!(g, (w % 4) as usize, "window {w}");
        assert_eq!(
            f.index(base + w * WINDOW + WINDOW - 16).0,
            g,
            "the window's last granule"
        );
    }
}

#[test]
fn a_note_in_one_group_leaves_the_other_groups_alone() {
    // Each group's bits are words of their own: a block of window 1 makes no address of
    // windows 0, 2 or 3 "maybe", even those whose slot within the group is the same.
    const WINDOW: u64 = 64 << 20;
    let f: Filter<4, 1> = Filter::new();
    let base = 0x7f00_0000_0000u64;
    let born = base + WINDOW + 0x4560;
    f.note(born, true);
    let slot = f.index(born).1;
    let twin_in = |w: u64| {
        (0..)
            .map(|k| base + w * WINDOW + k * 16)
            .find(|&a| f.index(a).1 == slot)
            .unwrap()
    };
    for w in [0u64, 2, 3] {
        assert!(!f.maybe_sampled(twin_in(w)), "window {w}");
    }
    assert!(f.maybe_sampled(born));
    assert!(f.maybe_sampled(twin_in(5)), "window 5 shares group 1");
    f.note(born, false);
    assert!(!f.maybe_sampled(born));
}

#[test]
fn a_saturated_counter_never_forgets() {
    let f = Small::new();
    let a = 0x5000;
    for _ in 0..u16::MAX as u32 + 10 {
        f.note(a, true);
    }
    for _ in 0..200_000 {
        f.note(a, false);
    }
    assert!(
        f.maybe_sampled(a),
        "it cannot know how many are still live: it says maybe, for ever"
    );
}

#[test]
fn blocks_sharing_a_slot_are_counted_together() {
    let f = Small::new();
    let (a, b) = (0x1000, colliding(&Small::new(), 0x1000));
    f.note(a, true);
    f.note(b, true);
    f.note(a, false);
    assert!(f.maybe_sampled(a), "b is still live in the same slot");
    f.note(b, false);
    assert!(!f.maybe_sampled(a));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Blocks become live and are freed in any order; the filter, 64 slots wide so that
    /// 120 addresses collide, must say "maybe" for every live block, and "no" for a slot exactly
    /// when no live block maps to it.
    #[test]
    fn the_filter_matches_a_multiset_of_live_blocks(
        ops in prop::collection::vec((0u64..120, any::<bool>()), 1..300)
    ) {
        let f = Small::new();
        let mut live: BTreeMap<u64, u32> = BTreeMap::new();
        for (block, alloc) in ops {
            let addr = 0x7f12_3400_0000 + block * 48;
            if alloc {
                *live.entry(addr).or_default() += 1;
                f.note(addr, true);
            } else if let Some(n) = live.get_mut(&addr) {
                // Only blocks that are live are freed.
                *n -= 1;
                if *n == 0 {
                    live.remove(&addr);
                }
                f.note(addr, false);
            }
            for a in live.keys() {
                prop_assert!(f.maybe_sampled(*a));
            }
            for block in 0..120u64 {
                let addr = 0x7f12_3400_0000 + block * 48;
                let same_slot = live.keys().any(|&a| f.index(a) == f.index(addr));
                prop_assert_eq!(f.maybe_sampled(addr), same_slot);
            }
        }
    }
}

/// Two threads keep one sampled block each alive in the same slot, born and freed over and
/// over: whenever either has its block live the filter must say "maybe" (a clear racing a
/// set must never leave a live block's bit clear), and at the end, both freed, it says no.
#[test]
fn racing_births_and_frees_in_one_slot_never_hide_a_live_block() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let f = Small::new();
    let (a, b) = (0x1000, colliding(&f, 0x1000));
    let hidden = AtomicBool::new(false);
    let start = std::sync::Barrier::new(2);
    std::thread::scope(|s| {
        for t in 0..2u64 {
            let (f, hidden, start) = (&f, &hidden, &start);
            s.spawn(move || {
                let addr = if t == 0 { a } else { b };
                start.wait();
                for _ in 0..2_000_000 {
                    f.note(addr, true);
                    let seen = f.maybe_sampled(addr);
                    // Still live: another thread's notes in between must not have hidden it.
                    let still_seen = f.maybe_sampled(addr);
                    if !seen || !still_seen {
                        hidden.store(true, Ordering::Relaxed);
                    }
                    f.note(addr, false);
                }
            });
        }
    });
    assert!(
        !hidden.load(Ordering::Relaxed),
        "a live block's bit was clear"
    );
    assert!(!f.maybe_sampled(a), "both freed: certainly not sampled");
}

/// What a probe written from `Filter::PROBE` (the interposer's assembly `free`) answers: the
/// geometry's arithmetic on the filter's raw bytes.
fn probe_by_geometry<const G: usize, const W: usize>(f: &Filter<G, W>, addr: u64) -> bool {
    let geo = Filter::<G, W>::PROBE;
    let base = f as *const Filter<G, W> as *const u8;
    // SAFETY: the offset is the flag's own, inside `f`.
    if unsafe { *base.add(geo.everywhere_offset) } != 0 {
        return true;
    }
    let slot = (addr >> 4) as usize;
    let at = geo.bits_offset
        + ((addr >> geo.group_shift) as usize & geo.group_field)
        + ((slot >> 6) & geo.word_mask) * 8;
    assert!(at + 8 <= core::mem::size_of::<Filter<G, W>>());
    // SAFETY: `at` is an aligned word of `bits`, inside `f` (asserted above).
    let word = unsafe { (*(base.add(at) as *const AtomicU64)).load(Ordering::Relaxed) };
    word & (1 << (slot % 64)) != 0
}

#[test]
fn the_probe_geometry_answers_as_the_filter() {
    // The interposer's geometry; a static, as there (2 MiB of counters: too big for a stack).
    static FILTER: Filter<64, 256> = Filter::new();
    let f = &FILTER;
    let mut rng = 0x1234_5678_9abc_def1u64;
    let mut addrs = Vec::new();
    for _ in 0..2_000 {
        next_gap(&mut rng, 1);
        // Addresses over many 64 MiB windows and the whole user range, 16-byte aligned.
        let a = (rng & 0x0000_7fff_ffff_fff0) | 0x10;
        addrs.push(a);
        if addrs.len() % 3 == 0 {
            f.note(a, true);
        }
    }
    let mut set = 0;
    for &a in &addrs {
        assert_eq!(probe_by_geometry(f, a), f.maybe_sampled(a), "{a:#x}");
        set += probe_by_geometry(f, a) as usize;
    }
    assert!(
        set >= addrs.len() / 3,
        "every noted address answers maybe: {set}"
    );
    f.maybe_everywhere();
    assert!(addrs.iter().all(|&a| probe_by_geometry(f, a)));
}

#[test]
fn a_child_frees_the_lock_of_a_group_noted_in_the_parent_and_leaves_the_others_unread() {
    // Group g of an address is its 64 MiB window modulo 4.
    let f: Filter<4, 256> = Filter::new();
    let in_group = |g: u64| 0x7f00_0000_0000u64 + (g << WINDOW_SHIFT) + 0x40;
    f.note(in_group(1), true);
    f.note(in_group(3), true);
    assert_eq!(f.flags.noted_groups.load(Ordering::Relaxed), 0b1010);
    // A parent thread holds group 3's lock at the fork: in the child nobody will release it.
    core::mem::forget(f.notes[3].lock.lock());
    assert!(f.notes[3].lock.is_locked());
    // SAFETY: this test's filter has no other user.
    unsafe { f.after_fork_in_child() };
    assert!(
        !f.notes[3].lock.is_locked(),
        "the noted group's lock is free again"
    );
    // Notes work in the child: the block noted live in the parent is freed, a new one born.
    f.note(in_group(3), false);
    assert!(
        !f.maybe_sampled(in_group(3)),
        "the last block of its slot was freed"
    );
    f.note(in_group(3) + 16, true);
    assert!(f.maybe_sampled(in_group(3) + 16));
    // Groups never noted were never locked, and the child did not read them (their counters
    // and lock are pages of zeroes the parent never touched: a read faults one in).
    assert_eq!(f.flags.noted_groups.load(Ordering::Relaxed), 0b1010);
}
