//! Reclamation: single-thread rules, then readers racing a writer that poisons what it frees.

// The racing test needs real threads; the library's own rule (raw pthreads with signals
// blocked) is about threads inside a host, not the test runner's.
#![allow(clippy::disallowed_methods)]

use super::*;
use proptest::prelude::*;
use std::sync::atomic::AtomicPtr;
use std::sync::Arc;

#[test]
fn a_value_retired_while_nobody_reads_is_free_at_once() {
    let d = Domain::new();
    let _me = d.claim().unwrap();
    let r = d.retire();
    assert!(d.quiescent(r, None));
}

#[test]
fn a_reader_pinned_before_retirement_holds_the_value() {
    let d = Domain::new();
    let reader = d.claim().unwrap();
    let pin = d.pin(reader);
    let r = d.retire();
    assert!(!d.quiescent(r, None));
    drop(pin);
    assert!(d.quiescent(r, None));
}

#[test]
fn a_reader_pinned_after_retirement_does_not_hold_it() {
    let d = Domain::new();
    let reader = d.claim().unwrap();
    let r = d.retire();
    let _pin = d.pin(reader);
    assert!(d.quiescent(r, None), "it can only have seen the new value");
    let r2 = d.retire();
    assert!(!d.quiescent(r2, None), "but it holds the next one");
}

#[test]
fn nested_pins_keep_the_outer_epoch() {
    let d = Domain::new();
    let reader = d.claim().unwrap();
    let outer = d.pin(reader);
    let r = d.retire();
    let inner = d.pin(reader);
    drop(inner);
    assert!(
        !d.quiescent(r, None),
        "the inner unpin must not end the outer read"
    );
    assert!(d.is_pinned(reader));
    drop(outer);
    assert!(!d.is_pinned(reader));
    assert!(d.quiescent(r, None));
}

#[test]
fn the_callers_own_slot_can_be_excepted() {
    let d = Domain::new();
    let me = d.claim().unwrap();
    let _pin = d.pin(me);
    let r = d.retire();
    assert!(!d.quiescent(r, None));
    assert!(d.quiescent(r, Some(me)));
}

#[test]
fn slots_are_claimed_until_none_is_left_and_released_ones_come_back() {
    let d = Domain::new();
    let all: Vec<Slot> = (0..SLOTS).map(|_| d.claim().unwrap()).collect();
    assert_eq!(d.owned(), SLOTS);
    assert!(d.claim().is_none());
    d.release(all[17]);
    assert_eq!(d.claim(), Some(all[17]));
    let mut seen: Vec<u32> = all.iter().map(|s| s.0).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), SLOTS, "every claim got a slot of its own");
}

#[test]
fn a_released_slot_no_longer_holds_anything() {
    let d = Domain::new();
    let s = d.claim().unwrap();
    let pin = d.pin(s);
    let r = d.retire();
    core::mem::forget(pin);
    assert!(!d.quiescent(r, None));
    d.release(s);
    assert!(d.quiescent(r, None));
}

#[test]
fn a_forked_child_forgets_every_other_thread() {
    let d = Domain::new();
    let mine = d.claim().unwrap();
    let other = d.claim().unwrap();
    core::mem::forget(d.pin(other));
    let my_pin = d.pin(mine);
    let r = d.retire();
    d.forget_other_threads(Some(mine));
    assert_eq!(d.owned(), 1);
    assert!(!d.quiescent(r, None), "the child's own pin survives");
    drop(my_pin);
    assert!(d.quiescent(r, None));
}

#[test]
fn limbo_gives_back_only_what_no_reader_holds() {
    let d = Domain::new();
    let l = Limbo::new();
    let reader = d.claim().unwrap();
    l.push(d.retire(), 1);
    let pin = d.pin(reader);
    l.push(d.retire(), 2);
    assert_eq!(l.take_ready(&d, None), vec![1]);
    assert_eq!(l.len(), 1);
    drop(pin);
    assert_eq!(l.take_ready(&d, None), vec![2]);
    assert!(l.is_empty());
}

proptest! {
    /// Any interleaving of pins, unpins and retirements by a few threads, replayed in one:
    /// a retirement is reported quiescent exactly when no slot pinned before it is still
    /// pinned (the model: the epoch each slot pinned at).
    #[test]
    fn quiescence_matches_a_model(ops in proptest::collection::vec((0usize..4, 0u8..3), 1..200)) {
        let d = Domain::new();
        let slots: Vec<Slot> = (0..4).map(|_| d.claim().unwrap()).collect();
        let mut pins: Vec<Option<Pinned<'_>>> = (0..4).map(|_| None).collect();
        let mut pinned_at: Vec<Option<u64>> = vec![None; 4];
        let mut epoch = FIRST_EPOCH;
        let mut retired: Vec<u64> = Vec::new();
        for (who, op) in ops {
            match op {
                0 if pins[who].is_none() => {
                    pins[who] = Some(d.pin(slots[who]));
                    pinned_at[who] = Some(epoch);
                }
                1 => {
                    pins[who] = None;
                    pinned_at[who] = None;
                }
                _ => {
                    let r = d.retire();
                    prop_assert_eq!(r, epoch);
                    retired.push(r);
                    epoch += 1;
                }
            }
            for &r in &retired {
                let model = pinned_at.iter().all(|p| p.is_none_or(|e| e > r));
                prop_assert_eq!(d.quiescent(r, None), model, "retired in {}", r);
            }
        }
    }
}

/// A published value: `alive` is set to 0 when the writer frees it (the memory is kept, so a
/// reader that still looks at it sees the poison instead of crashing).
struct Published {
    alive: AtomicU64,
    payload: [u64; 8],
}

#[test]
fn readers_never_see_a_freed_value_whatever_the_scheduling() {
    const READERS: usize = 3;
    const SWAPS: usize = 2000;
    let d = Arc::new(Domain::new());
    let limbo = Arc::new(Limbo::new());
    let fresh = |n: u64| {
        Box::into_raw(Box::new(Published {
            alive: AtomicU64::new(1),
            payload: [n; 8],
        }))
    };
    let current = Arc::new(AtomicPtr::new(fresh(0)));
    let stop = Arc::new(AtomicU64::new(0));
    let stale = Arc::new(AtomicU64::new(0));
    // Swapping starts once every reader is reading (on a loaded machine the writer could
    // otherwise finish before a reader ran at all).
    let reading = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|k| {
            let (d, current, stop, stale, reading) = (
                d.clone(),
                current.clone(),
                stop.clone(),
                stale.clone(),
                reading.clone(),
            );
            std::thread::spawn(move || {
                let me = d.claim().unwrap();
                let mut reads = 0u64;
                while stop.load(Ordering::Relaxed) == 0 {
                    let pin = d.pin(me);
                    let p = current.load(Ordering::SeqCst);
                    // SAFETY: the test never frees a Published while the test runs.
                    let v = unsafe { &*p };
                    // Reader 0 sometimes stops in the middle of a read for a while.
                    if k == 0 && reads.is_multiple_of(64) {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    let sum: u64 = v.payload.iter().sum();
                    if v.alive.load(Ordering::SeqCst) == 0 || sum != v.payload[0] * 8 {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(pin);
                    if reads == 0 {
                        reading.fetch_add(1, Ordering::SeqCst);
                    }
                    reads += 1;
                }
                d.release(me);
                reads
            })
        })
        .collect();
    while reading.load(Ordering::SeqCst) < READERS as u64 {
        std::thread::yield_now();
    }
    let mut freed: Vec<*mut Published> = Vec::new();
    for n in 1..=SWAPS as u64 {
        let old = current.swap(fresh(n), Ordering::SeqCst);
        limbo.push(d.retire(), old as usize);
        for p in limbo.take_ready(&d, None) {
            let p = p as *mut Published;
            // SAFETY: p came from Box::into_raw and is not freed until the end of the test.
            unsafe { (*p).alive.store(0, Ordering::SeqCst) };
            freed.push(p);
        }
        if n % 100 == 0 {
            std::thread::yield_now();
        }
    }
    stop.store(1, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(
        stale.load(Ordering::Relaxed),
        0,
        "a reader saw a freed value"
    );
    // Once no reader is left, everything retired is reclaimable (how much was freed while
    // they ran depends on the scheduling, which a loaded machine decides).
    let during = freed.len();
    freed.extend(
        limbo
            .take_ready(&d, None)
            .into_iter()
            .map(|p| p as *mut Published),
    );
    assert_eq!(
        freed.len(),
        SWAPS,
        "every retired value is freed once no reader holds it ({during} while they read)"
    );
    for p in freed {
        // SAFETY: each pointer came from Box::into_raw once.
        drop(unsafe { Box::from_raw(p) });
    }
}
