//! The walk cache against fresh walks: on a model stack whose words change between walks, the
//! cached answer must always be the stack id a fresh walk interns.

use super::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

/// A model unwinder: a function `ra` has a frame of 16 + (ra % 4) * 16 bytes; the caller's
/// return address sits at CFA − 8. Returns the frames and logs every word read.
fn walk(mem: &BTreeMap<u64, u64>, ra: u64, sp: u64, reads: &mut Reads) -> Vec<u64> {
    reads.clear();
    let (mut ra, mut sp) = (ra, sp);
    let mut out = vec![ra];
    while ra != 0 && out.len() < 30 {
        let cfa = sp + 16 + (ra % 4) * 16;
        let v = mem.get(&(cfa - 8)).copied().unwrap_or(0);
        reads.log(cfa - 8, v);
        if v == 0 {
            break;
        }
        out.push(v);
        (ra, sp) = (v, cfa);
    }
    out
}

struct Interner(BTreeMap<Vec<u64>, u32>);

impl Interner {
    fn id(&mut self, frames: Vec<u64>) -> u32 {
        let next = self.0.len() as u32 + 2;
        *self.0.entry(frames).or_insert(next)
    }
}

fn key(ra: u64, sp: u64) -> Key {
    Key {
        ra,
        sp,
        bp: 0,
        generation: 1,
        stack_hi: 1 << 40,
        intervals: 0,
    }
}

fn build(ras: &[u64], sp: u64) -> BTreeMap<u64, u64> {
    let mut mem = BTreeMap::new();
    let mut cur = sp;
    for w in ras.windows(2) {
        let cfa = cur + 16 + (w[0] % 4) * 16;
        mem.insert(cfa - 8, w[1]);
        cur = cfa;
    }
    mem
}

/// Walk through the cache: a hit answers, a miss walks, interns and records.
fn cached(
    cache: &mut WalkCache,
    mem: &BTreeMap<u64, u64>,
    ra: u64,
    sp: u64,
    ids: &mut Interner,
) -> u32 {
    let k = key(ra, sp);
    if let Some(id) = cache.lookup(&k, || 7, |a| mem.get(&a).copied().unwrap_or(0)) {
        return id;
    }
    let mut reads = Reads::new();
    let id = ids.id(walk(mem, ra, sp, &mut reads));
    cache.insert(k, &reads, 7, id);
    id
}

#[test]
fn a_repeated_walk_is_answered_from_the_cache() {
    let mem = build(&[5, 9, 13, 21], 1000);
    let mut cache = WalkCache::new();
    let mut ids = Interner(BTreeMap::new());
    let first = cached(&mut cache, &mem, 5, 1000, &mut ids);
    assert_eq!(cache.hits, 0);
    assert_eq!(cached(&mut cache, &mem, 5, 1000, &mut ids), first);
    assert_eq!(cache.hits, 1);
}

#[test]
fn a_changed_word_is_a_miss_and_the_new_walk_is_recorded() {
    let mut mem = build(&[5, 9, 13, 21], 1000);
    let mut cache = WalkCache::new();
    let mut ids = Interner(BTreeMap::new());
    let first = cached(&mut cache, &mem, 5, 1000, &mut ids);
    let k = *mem.keys().last().unwrap();
    mem.insert(k, 25);
    let second = cached(&mut cache, &mem, 5, 1000, &mut ids);
    assert_ne!(first, second);
    assert_eq!(cache.hits, 0);
    assert_eq!(cached(&mut cache, &mem, 5, 1000, &mut ids), second);
    assert_eq!(cache.hits, 1);
}

#[test]
fn another_generation_or_stack_misses() {
    let mem = build(&[5, 9, 13], 1000);
    let mut cache = WalkCache::new();
    let mut ids = Interner(BTreeMap::new());
    cached(&mut cache, &mem, 5, 1000, &mut ids);
    let read = |a: u64| mem.get(&a).copied().unwrap_or(0);
    let other_gen = Key {
        generation: 2,
        ..key(5, 1000)
    };
    assert!(cache.lookup(&other_gen, || 0, read).is_none());
    let other_top = Key {
        stack_hi: 1 << 41,
        ..key(5, 1000)
    };
    assert!(cache.lookup(&other_top, || 0, read).is_none());
    assert!(cache.lookup(&key(5, 1000), || 0, read).is_some());
}

#[test]
fn a_walk_that_read_outside_its_stack_keys_on_the_interval_generation() {
    let mem = build(&[5, 9, 13], 1000);
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    walk(&mem, 5, 1000, &mut reads);
    reads.outside();
    cache.insert(key(5, 1000), &reads, 41, 9);
    let read = |a: u64| mem.get(&a).copied().unwrap_or(0);
    assert_eq!(cache.lookup(&key(5, 1000), || 41, read), Some(9));
    assert_eq!(
        cache.lookup(&key(5, 1000), || 42, read),
        None,
        "a mapping changed since"
    );
}

#[test]
fn walks_that_read_too_much_or_nothing_are_not_kept() {
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    cache.insert(key(5, 1000), &reads, 0, 3);
    assert!(cache.lookup(&key(5, 1000), || 0, |_| 0).is_none());
    for i in 0..=MAX_READS as u64 {
        reads.log(i * 8, i);
    }
    cache.insert(key(5, 1000), &reads, 0, 3);
    assert!(cache.lookup(&key(5, 1000), || 0, |a| a / 8).is_none());
}

proptest! {
    /// Many walks from a few starting points on a stack rewritten between walks: the cache's
    /// answer is always the id a fresh walk gets.
    #[test]
    fn cached_ids_equal_fresh_ids(
        rounds in proptest::collection::vec(
            (0usize..4, proptest::collection::vec((0usize..8, 1u64..30), 0..3)),
            1..60,
        )
    ) {
        let starts = [(5u64, 1000u64), (9, 1040), (13, 960), (6, 1000)];
        let mut mem = build(&[5, 9, 13, 17, 21, 25, 29], 1000);
        let mut cache = WalkCache::new();
        let mut ids = Interner(BTreeMap::new());
        for (start, edits) in rounds {
            for (i, v) in edits {
                if let Some(k) = mem.keys().nth(i).copied() {
                    mem.insert(k, v);
                }
            }
            let (ra, sp) = starts[start];
            let got = cached(&mut cache, &mem, ra, sp, &mut ids);
            let mut reads = Reads::new();
            let fresh = ids.id(walk(&mem, ra, sp, &mut reads));
            prop_assert_eq!(got, fresh);
        }
    }
}

#[test]
fn a_walk_of_exactly_max_reads_words_is_kept() {
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    for i in 0..MAX_READS as u64 {
        reads.log(i * 8, i);
    }
    assert_eq!(reads.len(), MAX_READS);
    cache.insert(key(5, 1000), &reads, 0, 3);
    assert_eq!(cache.lookup(&key(5, 1000), || 0, |a| a / 8), Some(3));
    assert_eq!(
        cache.lookup(&key(5, 1000), || 0, |a| if a == 8 * 39 { 0 } else { a / 8 }),
        None,
        "the last word is checked too"
    );
}

#[test]
fn walks_sharing_a_set_replace_each_other_and_never_answer_for_each_other() {
    let mut cache = WalkCache::new();
    // WAYS + 1 starting points in one set.
    let a = key(5, 1000);
    let mut starts = vec![a];
    starts.extend(
        (1..100_000u64)
            .map(|ra| key(ra, 1000))
            .filter(|k| k.ra != a.ra && slot(k) == slot(&a))
            .take(WAYS),
    );
    assert_eq!(starts.len(), WAYS + 1);
    let mut reads = Reads::new();
    reads.log(0x10, 1);
    for (id, k) in starts.iter().enumerate() {
        cache.insert(*k, &reads, 0, 10 + id as u32);
    }
    let answers: Vec<Option<u32>> = starts
        .iter()
        .map(|k| cache.lookup(k, || 0, |_| 1))
        .collect();
    let kept = answers.iter().filter(|a| a.is_some()).count();
    assert_eq!(kept, WAYS, "one walk was replaced: {answers:?}");
    for (id, got) in answers.iter().enumerate() {
        assert!(got.is_none() || *got == Some(10 + id as u32), "{answers:?}");
    }
}

#[test]
fn a_first_word_on_the_own_stack_that_changed_is_a_miss() {
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    reads.log(1008, 7);
    reads.log(1024, 9);
    cache.insert(key(5, 1000), &reads, 0, 3);
    let mem = |v: u64| move |a: u64| if a == 1008 { v } else { 9 };
    assert_eq!(cache.lookup(&key(5, 1000), || 0, mem(7)), Some(3));
    assert_eq!(cache.lookup(&key(5, 1000), || 0, mem(8)), None);
}

#[test]
fn one_start_keeps_several_walks_that_differ_above_it() {
    // operator new's case: one (ra, sp, bp), callers that differ in the first word read.
    let mut cache = WalkCache::new();
    for caller in 0..WAYS as u64 {
        let mut reads = Reads::new();
        reads.log(0x10, 100 + caller);
        cache.insert(key(5, 1000), &reads, 0, caller as u32 + 2);
    }
    for caller in 0..WAYS as u64 {
        let got = cache.lookup(&key(5, 1000), || 0, |_| 100 + caller);
        assert_eq!(got, Some(caller as u32 + 2));
    }
    assert_eq!(cache.lookup(&key(5, 1000), || 0, |_| 99), None);
}

#[test]
fn a_cleared_reads_log_starts_a_new_walk() {
    let mut reads = Reads::new();
    for i in 0..=MAX_READS as u64 {
        reads.log(i, i);
    }
    reads.outside();
    reads.clear();
    assert!(reads.is_empty() && !reads.read_outside());
    reads.log(8, 8);
    let mut cache = WalkCache::new();
    cache.insert(key(5, 1000), &reads, 0, 4);
    assert_eq!(
        cache.lookup(&key(5, 1000), || 0, |a| a),
        Some(4),
        "the overflow of the earlier walk is forgotten"
    );
}

#[test]
fn a_boxed_cache_starts_empty_and_fills_like_a_new_one() {
    let mut boxed = WalkCache::boxed().expect("memory for a walk cache");
    assert_eq!(boxed.lookup(&key(5, 1000), || 0, |_| 0), None);
    let mut reads = Reads::new();
    reads.log(0x10, 1);
    // More than a set's ways, all in one set: the zero victim state must still pick ways.
    let start = key(5, 1000);
    let same_set: Vec<Key> = (1..100_000u64)
        .map(|ra| key(ra, 1000))
        .filter(|k| slot(k) == slot(&start))
        .take(WAYS * 3)
        .collect();
    for (id, k) in same_set.iter().enumerate() {
        boxed.insert(*k, &reads, 0, id as u32 + 2);
        assert_eq!(boxed.lookup(k, || 0, |_| 1), Some(id as u32 + 2));
    }
    let kept: Vec<u32> = same_set
        .iter()
        .filter_map(|k| boxed.lookup(k, || 0, |_| 1))
        .collect();
    assert_eq!(kept.len(), WAYS, "every way holds a walk: {kept:?}");
    let last = same_set.len() as u32 + 1;
    assert!(kept.contains(&last), "the newest walk is kept: {kept:?}");
}

fn with_bp(k: Key, bp: u64) -> Key {
    Key { bp, ..k }
}

#[test]
fn a_frame_pointer_the_walk_did_not_use_is_not_compared() {
    // A caller keeping `&ring[i]` in RBP: every call starts with another RBP, but a walk that
    // never used it is the same walk.
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    reads.log(1008, 7);
    cache.insert(with_bp(key(5, 1000), 0x1111), &reads, 0, 3);
    assert_eq!(
        cache.lookup(&with_bp(key(5, 1000), 0x2222), || 0, |_| 7),
        Some(3)
    );
}

#[test]
fn a_frame_pointer_the_walk_used_must_match() {
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    reads.log(1008, 7);
    reads.used_entry_bp();
    cache.insert(with_bp(key(5, 1000), 0x1111), &reads, 0, 3);
    assert_eq!(
        cache.lookup(&with_bp(key(5, 1000), 0x1111), || 0, |_| 7),
        Some(3)
    );
    assert_eq!(
        cache.lookup(&with_bp(key(5, 1000), 0x2222), || 0, |_| 7),
        None
    );
    reads.clear();
    reads.log(1008, 7);
    cache.insert(with_bp(key(6, 1000), 0x1111), &reads, 0, 4);
    assert_eq!(
        cache.lookup(&with_bp(key(6, 1000), 0x2222), || 0, |_| 7),
        Some(4),
        "a cleared log forgets that the previous walk used its frame pointer"
    );
}

#[test]
fn every_word_of_a_walk_whose_length_is_not_a_group_is_checked() {
    // Words are verified in groups; a walk of 1..=9 words pads its last group, and a change
    // to any of its own words is still a miss.
    for n in 1..=9u64 {
        let mut cache = WalkCache::new();
        let mut reads = Reads::new();
        for i in 0..n {
            reads.log(1000 + 8 * i, 50 + i);
        }
        cache.insert(key(5, 1000), &reads, 0, 3);
        let mem = |a: u64| 50 + (a - 1000) / 8;
        assert_eq!(cache.lookup(&key(5, 1000), || 0, mem), Some(3), "n = {n}");
        for changed in 0..n {
            let at = 1000 + 8 * changed;
            let got = cache.lookup(&key(5, 1000), || 0, |a| if a == at { 0 } else { mem(a) });
            assert_eq!(got, None, "n = {n}, word {changed} changed");
        }
    }
}

#[test]
fn a_walk_marked_not_cacheable_is_not_kept() {
    // A walk that ended on a region the interval table did not know yet: the table may learn
    // of it without changing its generation, so the walk must be walked again next time.
    let mut cache = WalkCache::new();
    let mut reads = Reads::new();
    reads.log(1008, 7);
    reads.not_cacheable();
    cache.insert(key(5, 1000), &reads, 0, 3);
    assert_eq!(cache.lookup(&key(5, 1000), || 0, |_| 7), None);
    reads.clear();
    reads.log(1008, 7);
    cache.insert(key(5, 1000), &reads, 0, 3);
    assert_eq!(
        cache.lookup(&key(5, 1000), || 0, |_| 7),
        Some(3),
        "a cleared log is cacheable again"
    );
}
