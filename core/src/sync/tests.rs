//! The spin lock: mutual exclusion under threads, try_lock on a held lock, giving up only
//! when the wait policy says so and only through `lock_or_give_up`, and the fork helpers
//! (held across fork, freed in the child with a new value).

// The exclusion tests need real threads; the library's rule (raw pthreads with signals
// blocked) is about threads inside a host, not the test runner's.
#![allow(clippy::disallowed_methods)]

use super::*;
use std::cell::Cell;
use std::sync::atomic::AtomicBool;

thread_local! {
    /// This test thread's lock waits are told to give up (every other thread: yield, as the
    /// default policy does, so tests running beside this one are unaffected).
    static GIVE_UP: Cell<bool> = const { Cell::new(false) };
    static ROUNDS: Cell<u32> = const { Cell::new(0) };
}

fn test_policy(rounds: u32) -> Wait {
    ROUNDS.with(|r| r.set(rounds));
    if GIVE_UP.with(|g| g.get()) {
        Wait::GiveUp
    } else {
        Wait::Yield
    }
}

#[test]
fn threads_never_hold_the_lock_at_once() {
    // A plain (non-atomic) read-modify-write of the value: only exclusion keeps the count.
    let lock = SpinLock::new(0u64);
    let inside = AtomicBool::new(false);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..20_000 {
                    let mut g = lock.lock();
                    assert!(!inside.swap(true, Ordering::Relaxed), "two holders");
                    *g += 1;
                    inside.store(false, Ordering::Relaxed);
                }
            });
        }
    });
    assert_eq!(*lock.lock(), 80_000);
}

#[test]
fn try_lock_fails_only_while_the_lock_is_held() {
    let lock = SpinLock::new(5);
    let g = lock.lock();
    assert!(lock.try_lock().is_none());
    drop(g);
    let mut g = lock.try_lock().expect("free again");
    *g = 6;
    drop(g);
    assert_eq!(*lock.lock(), 6);
}

#[test]
fn only_lock_or_give_up_gives_up_and_only_when_told() {
    set_wait_policy(test_policy);
    let lock = SpinLock::new(());
    let held = lock.lock();
    GIVE_UP.with(|g| g.set(true));
    assert!(lock.lock_or_give_up().is_none(), "held for ever: give up");
    assert_eq!(ROUNDS.with(|r| r.get()), 1, "after one round of spinning");
    GIVE_UP.with(|g| g.set(false));
    drop(held);
    assert!(
        lock.lock_or_give_up().is_some(),
        "a free lock is taken at once"
    );
    // A waiter told to yield keeps waiting until the holder lets go.
    let held = lock.lock();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let _g = lock.lock_or_give_up();
            _g.is_some()
        });
        std::thread::sleep(std::time::Duration::from_millis(20));
        drop(held);
        assert!(waiter.join().unwrap());
    });
}

#[test]
fn a_lock_held_across_fork_is_freed_by_force_unlock() {
    let lock = SpinLock::new(1);
    lock.lock_forever();
    assert!(lock.try_lock().is_none());
    // SAFETY: this test is the party that called lock_forever.
    unsafe { lock.force_unlock() };
    assert_eq!(*lock.try_lock().expect("free"), 1);
}

#[test]
fn a_forked_child_replaces_the_value_without_dropping_the_old_one() {
    struct CountsDrops<'a>(&'a Cell<u32>);
    impl Drop for CountsDrops<'_> {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }
    let drops = Cell::new(0);
    let lock = SpinLock::new(CountsDrops(&drops));
    lock.lock_forever();
    // SAFETY: one thread uses this lock; as in a child, the holder is gone.
    unsafe { lock.replace_forgetting(CountsDrops(&drops)) };
    assert_eq!(
        drops.get(),
        0,
        "the old value may be half-updated: leaked, not dropped"
    );
    assert!(lock.try_lock().is_some(), "and the lock is free");
    drop(lock);
    assert_eq!(drops.get(), 1, "the new value is owned as usual");
}

#[test]
fn an_idle_pool_keeps_up_to_its_size_and_never_waits() {
    let pool = IdlePool::<2>::new();
    assert_eq!(pool.take(), None);
    assert!(!pool.give(0), "0 is no item");
    assert!(pool.give(0x1000) && pool.give(0x2000));
    assert!(!pool.give(0x3000), "full: the caller frees it");
    let mut taken = [pool.take().unwrap(), pool.take().unwrap()];
    taken.sort_unstable();
    assert_eq!(taken, [0x1000, 0x2000]);
    assert_eq!(pool.take(), None);
    // Busy (a fork copied its lock held): nothing is taken or kept, and nothing waits.
    assert!(pool.give(0x4000));
    pool.slots.lock_forever();
    assert!(pool.slots.is_locked());
    assert_eq!(pool.take(), None);
    assert!(pool.slots.is_locked(), "take left it locked");
    assert!(!pool.give(0x5000));
}

#[test]
fn a_failed_try_lock_leaves_the_holder_its_lock() {
    // try_lock used to build its guard before knowing it had the lock, and dropping that
    // guard on failure released the lock under its holder (diag's held line, the fork log).
    let lock = SpinLock::new(0u32);
    let held = lock.lock();
    assert!(lock.try_lock().is_none());
    assert!(lock.is_locked(), "the holder still holds it");
    assert!(lock.try_lock().is_none());
    drop(held);
    assert!(lock.try_lock().is_some());
}
