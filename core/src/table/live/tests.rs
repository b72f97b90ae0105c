//! The live table: 24-byte record packing, insert/replace/remove against a map model under
//! heavy collisions (identical hashes, probe chains that wrap around the end of the slot
//! array), backward-shift deletion keeping every probe chain intact with no tombstones,
//! growth past 7/8, snapshot copies, and threads working one table at once.

// The concurrency test needs real threads; the library's rule (raw pthreads with signals
// blocked) is about threads inside a host, not the test runner's.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

/// Every sub-shard bit, as `LiveTable::new` uses them.
const FULL: usize = (1 << SUB_BITS) - 1;

fn birth(stack: u32) -> Birth {
    Birth {
        stack,
        generation: (stack % 65_521) as u16,
        epoch: (stack % 251) as u8,
        ms: stack.wrapping_mul(7),
        sampled: stack % 2 == 1,
    }
}

/// Everything a record keeps, comparable.
type Fields = (u64, u64, u32, u16, u8, u8, u32);

fn fields(s: &Slot) -> Fields {
    (
        s.addr,
        s.size,
        s.stack,
        s.generation,
        s.epoch,
        s.flags,
        s.birth_ms,
    )
}

fn expected(addr: u64, size: u64, stack: u32) -> Fields {
    let b = birth(stack);
    let flags = if b.sampled { FLAG_SAMPLED } else { 0 };
    (addr, size, stack, b.generation, b.epoch, flags, b.ms)
}

/// The record for `addr`, looked up without removing it.
fn lookup(t: &LiveTable, addr: u64) -> Option<Slot> {
    let h = hash(addr);
    let s = t.padded(addr, h)?.0.lock();
    if s.capacity == 0 {
        return None;
    }
    let i = s.find(h, addr)?;
    // SAFETY: find returns an index < capacity.
    Some(unsafe { (*s.slots.add(i)).unpack() })
}

fn slots_of(s: &Shard) -> Vec<Record> {
    (0..s.capacity)
        // SAFETY: i < capacity.
        .map(|i| unsafe { *s.slots.add(i) })
        .collect()
}

/// The linear-probing invariant: every record sits at its home or after a gap-free run of
/// occupied slots from it (so `find` reaches it), addresses are unique, `len` is exact and
/// the shard is never more than 7/8 full.
fn check_shard(s: &Shard) {
    let slots = slots_of(s);
    let cap = s.capacity;
    let mut seen = BTreeSet::new();
    for (i, r) in slots.iter().enumerate() {
        if r.is_empty() {
            continue;
        }
        assert!(seen.insert(r.addr()), "{:#x} stored twice", r.addr());
        let mut j = home(hash(r.addr()), cap);
        while j != i {
            assert!(
                !slots[j].is_empty(),
                "hole at {j} in the probe chain of {:#x} (home {}, at {i})",
                r.addr(),
                home(hash(r.addr()), cap)
            );
            j = (j + 1) % cap;
        }
        assert_eq!(s.find(hash(r.addr()), r.addr()), Some(i));
    }
    assert_eq!(seen.len(), s.len, "len counts the occupied slots");
    assert!(cap == 0 || s.len * 8 <= cap * 7, "more than 7/8 full");
}

fn check_all(t: &LiveTable) {
    for s in &t.shards {
        check_shard(&s.0.lock());
    }
}

fn snapshot(t: &LiveTable) -> BTreeMap<u64, Fields> {
    let mut out = Vec::new();
    for i in 0..SHARDS {
        t.copy_shard(i, &mut out);
    }
    let map: BTreeMap<u64, Fields> = out
        .iter()
        .map(|r| (r.addr(), fields(&r.unpack())))
        .collect();
    assert_eq!(map.len(), out.len(), "a snapshot holds each record once");
    map
}

/// Addresses in shard 0 whose home (in a shard of `INITIAL_CAPACITY` slots) satisfies `want`,
/// from the first 64 MiB windows at or above `from` that map to shard group 0.
fn in_shard0(from: u64, n: usize, want: impl Fn(usize) -> bool) -> Vec<u64> {
    let window = 1u64 << WINDOW_SHIFT;
    (0..)
        .map(|w| (from & !(window - 1)) + w * window)
        .filter(|&base| shard_index(base, 0, FULL) == 0)
        .flat_map(|base| (0..window / 16).map(move |k| base + k * 16))
        .filter(|&a| {
            let h = hash(a);
            shard_index(a, h, FULL) == 0 && want(home(h, INITIAL_CAPACITY))
        })
        .take(n)
        .collect()
}

/// A pool of addresses that makes collisions the rule: 16 sharing one hash whose home is
/// the second-last slot (their chain wraps around), many homed in the last slots and in the
/// first slots (displaced by wrapped chains), and enough others in the same shard to make it
/// grow.
fn pool() -> &'static [u64] {
    static POOL: OnceLock<Vec<u64>> = OnceLock::new();
    POOL.get_or_init(|| {
        let cap = INITIAL_CAPACITY;
        let same = in_shard0(0x5500_0000_0000, 1, |h| h == cap - 2)[0];
        let mut v: Vec<u64> = (0..16).map(|k| same + k).collect();
        v.extend(in_shard0(0x5600_0000_0000, 40, |h| h >= cap - 6));
        v.extend(in_shard0(0x5700_0000_0000, 40, |h| h < 4));
        v.extend(in_shard0(0x5800_0000_0000, 260, |_| true));
        v
    })
}

#[test]
fn addresses_differing_below_16_bytes_share_a_hash() {
    // The property the collision tests rely on (malloc blocks are 16-aligned).
    assert_eq!(hash(0x1230), hash(0x123f));
    assert_ne!(hash(0x1230), hash(0x1240));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn every_in_range_record_round_trips(
        addr in 1u64..1 << 48,
        size in 0u64..1 << 48,
        stack: u32,
        generation: u16,
        epoch: u8,
        flags: u8,
        birth_ms: u32,
    ) {
        let s = Slot { addr, size, stack, generation, epoch, flags, birth_ms };
        let r = Record::pack(&s);
        prop_assert_eq!(fields(&r.unpack()), fields(&s));
        prop_assert!(!r.is_empty());
        prop_assert_eq!(core::mem::size_of::<Record>(), 24);
    }

    #[test]
    fn oversized_sizes_saturate_without_spilling_into_other_fields(
        size in (1u64 << 48)..,
        epoch: u8,
        flags: u8,
    ) {
        let s = Slot { addr: 0x1000, size, epoch, flags, ..Slot::default() };
        let r = Record::pack(&s);
        prop_assert_eq!(r.size(), (1 << 48) - 1);
        prop_assert_eq!((r.epoch(), r.flags()), (epoch, flags));
    }
}

#[test]
fn a_record_is_empty_only_when_all_zero() {
    assert!(Record::default().is_empty());
    assert!(Record::pack(&Slot::default()).is_empty());
    let r = Record::pack(&Slot {
        addr: 0x10,
        ..Slot::default()
    });
    assert!(!r.is_empty());
}

#[test]
fn a_removed_record_carries_what_was_recorded() {
    let t = LiveTable::new();
    assert!(matches!(
        t.insert(0x7f00_0000_1010, 48, birth(77)),
        Inserted::New
    ));
    assert!(matches!(
        t.insert(0x7f00_0000_2020, 64, birth(78)),
        Inserted::New
    ));
    let got = t.remove(0x7f00_0000_1010).expect("recorded");
    assert_eq!(fields(&got), expected(0x7f00_0000_1010, 48, 77));
    assert_eq!(
        got.flags & FLAG_SAMPLED,
        FLAG_SAMPLED,
        "stack 77 was sampled"
    );
    assert!(t.remove(0x7f00_0000_1010).is_none(), "removed once");
    assert_eq!(
        fields(&t.remove(0x7f00_0000_2020).expect("recorded")),
        expected(0x7f00_0000_2020, 64, 78)
    );
    assert_eq!(t.footprint().1, 0);
}

#[test]
fn inserting_a_live_address_again_replaces_its_record() {
    let t = LiveTable::new();
    t.insert(0x4000, 10, birth(1));
    match t.insert(0x4000, 20, birth(2)) {
        Inserted::Replaced(old) => assert_eq!(fields(&old), expected(0x4000, 10, 1)),
        _ => panic!("the old record must be reported"),
    }
    assert_eq!(t.footprint().1, 1, "still one record");
    assert_eq!(
        fields(&lookup(&t, 0x4000).unwrap()),
        expected(0x4000, 20, 2)
    );
}

#[test]
fn unknown_addresses_are_not_found() {
    let t = LiveTable::new();
    assert!(
        t.remove(0x1000).is_none(),
        "empty table, shard never allocated"
    );
    let same = pool()[0];
    t.insert(same, 1, birth(1));
    t.insert(same + 1, 1, birth(2));
    assert!(t.remove(same + 2).is_none(), "same hash, not recorded");
    assert!(t.remove(same + 16).is_none());
    assert_eq!(t.footprint().1, 2);
}

#[test]
fn a_chain_of_identical_hashes_stays_findable_whatever_is_removed() {
    let p = pool();
    let same = &p[..16];
    for victim in 0..16 {
        let t = LiveTable::new();
        for (k, &a) in same.iter().enumerate() {
            t.insert(a, k as u64 + 1, birth(k as u32));
        }
        check_all(&t);
        let got = t.remove(same[victim]).unwrap();
        assert_eq!(got.size, victim as u64 + 1);
        check_all(&t);
        for (k, &a) in same.iter().enumerate() {
            assert_eq!(
                lookup(&t, a).map(|s| s.size),
                (k != victim).then_some(k as u64 + 1),
                "after removing #{victim}, #{k}"
            );
        }
    }
}

#[test]
fn backward_shift_pulls_wrapped_entries_back_and_leaves_no_tombstones() {
    let p = pool();
    let cap = INITIAL_CAPACITY;
    let t = LiveTable::new();
    // 16 entries homed at cap-2 occupy cap-2, cap-1 and wrap into 0..14; entries homed at
    // 0..4 queue behind them.
    let firsts = &p[56..96];
    for &a in p[..16].iter().chain(firsts) {
        t.insert(a, 1, birth(3));
    }
    check_all(&t);
    let highest = |t: &LiveTable| {
        let s = t.shards[0].0.lock();
        assert_eq!(s.capacity, cap, "no growth in this test");
        firsts
            .iter()
            .map(|&a| s.find(hash(a), a).unwrap())
            .max()
            .unwrap()
    };
    // 40 entries homed in 0..4 with nothing else in the shard fill a gap-free run from their
    // lowest home: all below slot 44. Behind the wrapped chain they sit further up.
    assert!(highest(&t) >= 44);
    // Removing the chain shifts the wrapped tail back over the end of the array, and the
    // entries queued behind it back towards their homes.
    for &a in &p[..16] {
        t.remove(a).unwrap();
        check_all(&t);
    }
    assert!(
        highest(&t) < 44,
        "entries left displaced after the chain went"
    );
    for &a in firsts {
        t.remove(a).unwrap();
    }
    let s = t.shards[0].0.lock();
    assert!(
        slots_of(&s).iter().all(Record::is_empty),
        "deleting everything leaves every slot empty (no tombstones)"
    );
    assert_eq!(s.len, 0);
}

#[test]
fn a_shard_grows_past_seven_eighths_and_keeps_every_record() {
    let t = LiveTable::new();
    let addrs = in_shard0(0x6000_0000_0000, 1000, |_| true);
    for (k, &a) in addrs.iter().enumerate() {
        assert!(matches!(
            t.insert(a, k as u64, birth(k as u32)),
            Inserted::New
        ));
        let s = t.shards[0].0.lock();
        assert!(
            s.len * 8 <= s.capacity * 7,
            "over 7/8 after {} inserts",
            k + 1
        );
    }
    check_all(&t);
    let cap = t.shards[0].0.lock().capacity;
    assert!(cap >= 1000 * 8 / 7, "capacity {cap} for 1000 records");
    assert_eq!(
        t.footprint(),
        (cap * 24, 1000),
        "only shard 0 has memory; 24 bytes a slot"
    );
    for (k, &a) in addrs.iter().enumerate() {
        assert_eq!(
            fields(&lookup(&t, a).unwrap()),
            expected(a, k as u64, k as u32)
        );
    }
}

#[test]
fn a_snapshot_appends_exactly_the_live_records() {
    let t = LiveTable::new();
    let mut model = BTreeMap::new();
    for k in 0..3000u64 {
        let a = 0x7000_0000_0000 + k * 0x30;
        t.insert(a, k, birth(k as u32));
        model.insert(a, expected(a, k, k as u32));
    }
    for k in (0..3000u64).step_by(3) {
        let a = 0x7000_0000_0000 + k * 0x30;
        t.remove(a).unwrap();
        model.remove(&a);
    }
    assert_eq!(snapshot(&t), model);
    // Appends: what the buffer held stays in front.
    let marker = Record::pack(&Slot {
        addr: 0xdead0,
        ..Slot::default()
    });
    let mut out = vec![marker];
    let mut n = 0;
    for i in 0..SHARDS {
        t.copy_shard(i, &mut out);
        n = out.len();
    }
    assert_eq!(out[0], marker);
    assert_eq!(n, 1 + model.len());
    assert_eq!(t.copy_shard(SHARDS, &mut out), 0, "no such shard");
    assert_eq!(out.len(), n, "nothing appended for it");
}

#[derive(Clone, Debug)]
enum Op {
    Insert(usize, u64, u32),
    Remove(usize),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn colliding_inserts_and_removes_match_a_map(
        ops in prop::collection::vec(
            prop_oneof![
                3 => (0usize..356, 1u64..1 << 40, any::<u32>()).prop_map(|(i, s, b)| Op::Insert(i, s, b)),
                2 => (0usize..356).prop_map(Op::Remove),
            ],
            1..600,
        )
    ) {
        let p = pool();
        let t = LiveTable::new();
        let mut model: BTreeMap<u64, Fields> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Insert(i, size, stack) => {
                    let a = p[i];
                    let new = expected(a, size, stack);
                    match (t.insert(a, size, birth(stack)), model.insert(a, new)) {
                        (Inserted::New, None) => {}
                        (Inserted::Replaced(old), Some(m)) => prop_assert_eq!(fields(&old), m),
                        (Inserted::Lost, _) => prop_assert!(false, "lost a record"),
                        (_, m) => prop_assert!(false, "insert of {:#x}: model had {:?}", a, m),
                    }
                }
                Op::Remove(i) => {
                    let a = p[i];
                    prop_assert_eq!(t.remove(a).map(|s| fields(&s)), model.remove(&a));
                }
            }
            check_shard(&t.shards[0].0.lock());
        }
        prop_assert_eq!(snapshot(&t), model.clone());
        prop_assert_eq!(t.footprint().1, model.len());
    }
}

#[test]
fn threads_inserting_and_removing_at_once_lose_nothing() {
    static T: LiveTable = LiveTable::new();
    const THREADS: u64 = 4;
    const EACH: u64 = 5000;
    let workers: Vec<_> = (0..THREADS)
        .map(|w| {
            std::thread::spawn(move || {
                let base = 0x3000_0000_0000 + w * 0x1_0000_0000;
                for k in 0..EACH {
                    T.insert(base + k * 16, k + 1, birth(w as u32));
                    if k % 2 == 1 {
                        // Remove an older one of our own: others keep inserting meanwhile.
                        let got = T.remove(base + (k - 1) * 16).expect("ours");
                        assert_eq!(got.size, k);
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    check_all(&T);
    let snap = snapshot(&T);
    let want: BTreeMap<u64, Fields> = (0..THREADS)
        .flat_map(|w| {
            let base = 0x3000_0000_0000 + w * 0x1_0000_0000;
            (0..EACH)
                .filter(|k| k % 2 == 1)
                .map(move |k| (base + k * 16, expected(base + k * 16, k + 1, w as u32)))
        })
        .collect();
    assert_eq!(snap, want);
}

#[test]
fn a_forked_child_empties_only_the_shards_held_at_the_fork() {
    let t = LiveTable::new();
    let in0 = in_shard0(0x7000_0000_0000, 20, |_| true);
    let elsewhere: Vec<u64> = (0..2000u64)
        .map(|k| 0x7100_0000_0000 + k * 16)
        .filter(|&a| shard_index(a, hash(a), FULL) != 0)
        .take(20)
        .collect();
    for (i, &a) in in0.iter().chain(&elsewhere).enumerate() {
        assert!(matches!(
            t.insert(a, 32, birth(i as u32 + 2)),
            Inserted::New
        ));
    }
    // A thread of the parent was inside shard 0 when the process forked.
    t.shards[0].0.lock_forever();
    // SAFETY: this test is the table's only user.
    assert_eq!(unsafe { t.after_fork_in_child() }, 1);
    assert!(
        in0.iter().all(|&a| lookup(&t, a).is_none()),
        "shard 0 forgotten"
    );
    assert!(
        elsewhere.iter().all(|&a| lookup(&t, a).is_some()),
        "other shards intact"
    );
    // The emptied shard works again.
    assert!(matches!(t.insert(in0[0], 48, birth(7)), Inserted::New));
    assert_eq!(lookup(&t, in0[0]).map(|s| s.size), Some(48));
    // SAFETY: as above; nothing is held now.
    assert_eq!(unsafe { t.after_fork_in_child() }, 0);
}

#[test]
fn one_shard_per_group_keeps_a_window_in_one_shard_and_loses_nothing() {
    // Sampling's table: 5,000 blocks of one 64 MiB window land in one shard (the full table
    // spreads them over its 64); each is found, removed once, and the snapshot is exact.
    let t = Box::new(LiveTable::with_one_shard_per_group());
    let base = 0x7f00_0400_0000u64;
    let addrs: Vec<u64> = (0..5_000u64).map(|k| base + k * 48).collect();
    for &a in &addrs {
        assert!(matches!(t.insert(a, 48, Birth::default()), Inserted::New));
    }
    let used: Vec<usize> = (0..SHARDS)
        .filter(|&i| t.shards[i].0.lock().len > 0)
        .collect();
    assert_eq!(used.len(), 1, "one window, one shard: {used:?}");
    check_all(&t);
    assert_eq!(snapshot(&t).len(), addrs.len());
    for &a in &addrs {
        assert_eq!(t.remove(a).map(|s| s.addr), Some(a));
        assert!(t.remove(a).is_none());
    }
    assert!(snapshot(&t).is_empty());
    let full = Box::new(LiveTable::new());
    for &a in &addrs {
        full.insert(a, 48, Birth::default());
    }
    let spread = (0..SHARDS)
        .filter(|&i| full.shards[i].0.lock().len > 0)
        .count();
    assert_eq!(
        spread, 64,
        "the full table spreads one window over its group"
    );
}

/// A table made in zeroed memory by `init_zeroed`: what the library's state holds.
fn zeroed_table(one_shard_per_group: bool) -> Box<LiveTable> {
    let mut zeroed = Box::<LiveTable>::new_zeroed();
    // SAFETY: new_zeroed gives aligned, writable, all-zero memory for a LiveTable.
    unsafe { LiveTable::init_zeroed(zeroed.as_mut_ptr(), one_shard_per_group) };
    // SAFETY: init_zeroed made it a valid table.
    unsafe { zeroed.assume_init() }
}

#[test]
fn a_table_made_in_zeroed_memory_works_like_a_built_one() {
    for one_shard_per_group in [false, true] {
        let zeroed = zeroed_table(one_shard_per_group);
        let built = Box::new(if one_shard_per_group {
            LiveTable::with_one_shard_per_group()
        } else {
            LiveTable::new()
        });
        assert_eq!(zeroed.sub_mask, built.sub_mask);
        let mut model = BTreeMap::new();
        for k in 0..20_000u64 {
            let a = 0x7f00_0000_0000 + (k % 7) * (64 << 20) + k * 0x40;
            for t in [&zeroed, &built] {
                assert!(matches!(t.insert(a, k, birth(k as u32)), Inserted::New));
            }
            model.insert(a, expected(a, k, k as u32));
        }
        for k in (0..20_000u64).step_by(5) {
            let a = 0x7f00_0000_0000 + (k % 7) * (64 << 20) + k * 0x40;
            assert_eq!(zeroed.remove(a).map(|s| s.addr), Some(a));
            built.remove(a);
            model.remove(&a);
        }
        check_all(&zeroed);
        assert_eq!(snapshot(&zeroed), model);
        let used = |t: &LiveTable| {
            (0..SHARDS)
                .map(|i| t.shards[i].0.lock().len)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            used(&zeroed),
            used(&built),
            "the same shards hold the same counts"
        );
        for t in [&zeroed, &built] {
            let capacities: usize = t.shards.iter().map(|s| s.0.lock().capacity).sum();
            assert_eq!(
                t.total_capacity(),
                capacities,
                "slots counted as shards grow"
            );
            let marked = (0..SHARDS).filter(|&i| t.in_use(i)).count();
            let grown = t.shards.iter().filter(|s| s.0.lock().capacity > 0).count();
            assert_eq!(
                marked, grown,
                "exactly the shards that grew are marked in use"
            );
        }
    }
}

#[test]
fn only_inserts_put_a_shard_in_use_and_a_remove_locks_none_that_is_not() {
    let t = Box::new(LiveTable::new());
    let a = 0x7200_0000_0040u64;
    let index = shard_index(a, hash(a), FULL);
    // A free of a block no shard holds: found nowhere, no lock taken, nothing marked.
    assert!(t.remove(a).is_none());
    assert!(!t.in_use(index));
    assert!(!t.shards[index].0.is_locked());
    assert_eq!(t.total_capacity(), 0);
    assert_eq!(t.footprint(), (0, 0));
    let mut out = Vec::new();
    assert_eq!(t.copy_shard(index, &mut out), 0);
    assert!(out.is_empty());
    // The first insert marks its shard, and only it.
    assert!(matches!(t.insert(a, 8, birth(1)), Inserted::New));
    assert!(t.in_use(index));
    assert_eq!((0..SHARDS).filter(|&i| t.in_use(i)).count(), 1);
    assert_eq!(t.total_capacity(), INITIAL_CAPACITY);
    assert_eq!(t.remove(a).map(|s| s.addr), Some(a));
    assert!(
        t.in_use(index),
        "a shard stays in use once it has a slot array"
    );
}
