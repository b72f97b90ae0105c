//! The threads the program created: by which stack, since when, with which stack range.
//!
//! A thread leak (a C library starting threads per handle that is never closed) grows the
//! thread count and the resident thread stacks; the creating stack names the culprit the way
//! an allocation stack does. Threads come and go rarely compared with allocations, so one
//! lock guards the registry; a slot is reused once its thread is gone.

use crate::sync::SpinLock;
use std::collections::BTreeMap;

/// One live thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The stack that called `pthread_create`.
    pub creator: u32,
    /// Uptime ms when it started.
    pub start_ms: u32,
    /// Its stack range `[lo, hi)` (for the ledger's thread-stack residency).
    pub stack: (u64, u64),
}

/// Per creating stack: (live, created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreatorCounts {
    pub live: u64,
    pub created: u64,
    /// Start of the oldest live thread of this creator (valid when live > 0).
    pub oldest_ms: u64,
}

/// Threads of one creator created and not yet running our trampoline: how many, and the
/// uptime ms of the first of them (kept while any is pending).
#[derive(Clone, Copy, Default)]
struct Pending {
    count: u64,
    first_ms: u64,
}

#[derive(Default)]
struct Registry {
    /// Created, not yet running our trampoline (counted as alive).
    starting: usize,
    /// The same, by creator: a thread exists from the moment `pthread_create` returns, and a
    /// dump taken before it first runs (a loaded machine, an exit right after the create)
    /// counts it for its creator (it was missed, one thread short of what the program knew).
    pending: BTreeMap<u32, Pending>,
    slots: Vec<Option<ThreadInfo>>,
    free: Vec<u32>,
    created: BTreeMap<u32, u64>,
    total_created: u64,
}

pub struct ThreadRegistry {
    inner: SpinLock<Registry>,
}

impl Registry {
    /// One thread of `creator` is no longer pending (it runs, or was never created).
    fn leave_pending(&mut self, creator: u32) {
        if let Some(p) = self.pending.get_mut(&creator) {
            p.count = p.count.saturating_sub(1);
            if p.count == 0 {
                self.pending.remove(&creator);
            }
        }
    }
}

impl ThreadRegistry {
    pub const fn new() -> Self {
        ThreadRegistry {
            inner: SpinLock::new(Registry {
                starting: 0,
                pending: BTreeMap::new(),
                slots: Vec::new(),
                free: Vec::new(),
                created: BTreeMap::new(),
                total_created: 0,
            }),
        }
    }

    /// A thread of `creator` is about to be created at uptime `now_ms` (alive from now on,
    /// for `live_count` and `by_creator`).
    pub fn starting(&self, creator: u32, now_ms: u64) {
        let mut r = self.inner.lock();
        r.starting += 1;
        let p = r.pending.entry(creator).or_default();
        if p.count == 0 {
            p.first_ms = now_ms;
        }
        p.count += 1;
    }

    /// The thread announced by `starting` was not created after all.
    pub fn not_started(&self, creator: u32) {
        let mut r = self.inner.lock();
        r.starting = r.starting.saturating_sub(1);
        r.leave_pending(creator);
    }

    /// Records a started thread (announced by `starting`); returns its slot (1-based; 0 =
    /// could not record).
    pub fn register(&self, t: ThreadInfo) -> u32 {
        let mut r = self.inner.lock();
        r.starting = r.starting.saturating_sub(1);
        r.leave_pending(t.creator);
        r.total_created += 1;
        *r.created.entry(t.creator).or_default() += 1;
        if let Some(i) = r.free.pop() {
            if let Some(s) = r.slots.get_mut(i as usize) {
                *s = Some(t);
                return i + 1;
            }
        }
        if r.slots.try_reserve(1).is_err() {
            return 0;
        }
        r.slots.push(Some(t));
        r.slots.len() as u32
    }

    /// The thread in `slot` (from `register`) ended; returns how many registered threads
    /// are still alive.
    pub fn unregister(&self, slot: u32) -> usize {
        let mut r = self.inner.lock();
        if let Some(i) = slot.checked_sub(1) {
            if let Some(s) = r.slots.get_mut(i as usize) {
                if s.take().is_some() {
                    r.free.push(i);
                }
            }
        }
        r.starting + r.slots.iter().flatten().count()
    }

    /// Live threads by creating stack, ascending, and the total ever created.
    pub fn by_creator(&self) -> (Vec<(u32, CreatorCounts)>, u64) {
        let r = self.inner.lock();
        let mut out: BTreeMap<u32, CreatorCounts> = r
            .created
            .iter()
            .map(|(&s, &created)| {
                (
                    s,
                    CreatorCounts {
                        created,
                        ..Default::default()
                    },
                )
            })
            .collect();
        let starts = r
            .slots
            .iter()
            .flatten()
            .map(|t| (t.creator, 1, t.start_ms as u64));
        let pending = r.pending.iter().map(|(&c, p)| (c, p.count, p.first_ms));
        let mut total = r.total_created;
        for (creator, n, since_ms) in starts.chain(pending) {
            let c = out.entry(creator).or_default();
            if c.live == 0 || since_ms < c.oldest_ms {
                c.oldest_ms = since_ms;
            }
            c.live += n;
        }
        for (&creator, p) in &r.pending {
            // Created already, registered (and counted) when it first runs.
            out.entry(creator).or_default().created += p.count;
            total += p.count;
        }
        (out.into_iter().collect(), total)
    }

    /// How many threads are alive (registered, or created and not yet running).
    pub fn live_count(&self) -> usize {
        let r = self.inner.lock();
        r.starting + r.slots.iter().flatten().count()
    }

    /// Stack ranges of the live threads.
    pub fn stacks(&self) -> Vec<(u64, u64)> {
        let r = self.inner.lock();
        r.slots.iter().flatten().map(|t| t.stack).collect()
    }

    pub fn fork_prepare(&self) {
        self.inner.lock_forever();
    }

    /// # Safety
    /// Pairs with `fork_prepare`.
    pub unsafe fn fork_release(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.inner.force_unlock() };
    }

    /// In a forked child only the forking thread exists: forget every other live thread
    /// (the creation counts stay: the child's history includes the parent's).
    pub fn keep_only(&self, slot: u32) {
        let mut r = self.inner.lock();
        r.starting = 0;
        r.pending.clear();
        let keep = slot.checked_sub(1);
        let n = r.slots.len();
        for i in 0..n {
            if Some(i as u32) != keep {
                if let Some(s) = r.slots.get_mut(i) {
                    if s.take().is_some() {
                        r.free.push(i as u32);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(creator: u32, start_ms: u32) -> ThreadInfo {
        ThreadInfo {
            creator,
            start_ms,
            stack: (0x1000, 0x2000),
        }
    }

    #[test]
    fn counts_live_and_created_per_creator() {
        let r = ThreadRegistry::new();
        let a = r.register(t(5, 10));
        let b = r.register(t(5, 20));
        let c = r.register(t(9, 30));
        assert_eq!((a, b, c), (1, 2, 3));
        r.unregister(a);
        let (by, total) = r.by_creator();
        assert_eq!(total, 3);
        assert_eq!(
            by,
            vec![
                (
                    5,
                    CreatorCounts {
                        live: 1,
                        created: 2,
                        oldest_ms: 20
                    }
                ),
                (
                    9,
                    CreatorCounts {
                        live: 1,
                        created: 1,
                        oldest_ms: 30
                    }
                ),
            ]
        );
    }

    /// What `by_creator` answers when one creator has threads: (its counts, total created).
    fn only(
        creator: u32,
        live: u64,
        created: u64,
        oldest_ms: u64,
    ) -> (Vec<(u32, CreatorCounts)>, u64) {
        let counts = CreatorCounts {
            live,
            created,
            oldest_ms,
        };
        (vec![(creator, counts)], created)
    }

    #[test]
    fn a_created_thread_counts_for_its_creator_before_it_runs() {
        let r = ThreadRegistry::new();
        r.starting(7, 100);
        r.starting(7, 150);
        r.starting(8, 120);
        r.not_started(8);
        assert_eq!(r.by_creator(), only(7, 2, 2, 100));
        assert_eq!(r.live_count(), 2);
        // One runs: registered once, counted once.
        let a = r.register(t(7, 160));
        assert_eq!(r.by_creator(), only(7, 2, 2, 100));
        r.register(t(7, 170));
        r.unregister(a);
        assert_eq!(r.by_creator(), only(7, 1, 2, 170));
    }

    #[test]
    fn slots_are_reused_and_double_unregister_is_harmless() {
        let r = ThreadRegistry::new();
        let a = r.register(t(1, 0));
        r.unregister(a);
        r.unregister(a);
        r.unregister(0);
        r.unregister(99);
        assert_eq!(r.register(t(2, 0)), a);
        assert_eq!(r.stacks().len(), 1);
    }

    #[test]
    fn a_fork_child_keeps_only_its_own_thread() {
        let r = ThreadRegistry::new();
        let _a = r.register(t(1, 0));
        let b = r.register(t(1, 5));
        r.keep_only(b);
        let (by, total) = r.by_creator();
        assert_eq!(total, 2);
        assert_eq!(
            by,
            vec![(
                1,
                CreatorCounts {
                    live: 1,
                    created: 2,
                    oldest_ms: 5
                }
            )]
        );
        r.keep_only(0);
        assert!(r.stacks().is_empty());
    }
}
