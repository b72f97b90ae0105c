//! A spin lock that never allocates and never parks through libc.
//!
//! Hooks run under conditions where a futex-based mutex from a library is a hazard (inside the
//! Go runtime with the world stopped, in signal handlers, in atfork windows), and every critical
//! section here is a handful of memory operations. After a short spin the waiter asks the
//! library's [`WaitPolicy`] what to do: yield (keeps a 2-core machine from burning a whole
//! time slice when the holder was preempted), keep spinning (a thread under a seccomp filter
//! makes no system call of ours), or give up (a child created without fork handlers, by a raw
//! `clone`, inherited a lock held by a thread that does not exist in it: hooks then skip their
//! bookkeeping instead of hanging).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// What a waiter does after a round of spinning.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Wait {
    Yield,
    Spin,
    /// The lock may never be released (see the module docs); only `lock_or_give_up` obeys.
    GiveUp,
}

/// The library's answer for the calling thread, given how many rounds it waited.
pub type WaitPolicy = fn(rounds: u32) -> Wait;

static POLICY: AtomicUsize = AtomicUsize::new(0);

/// Installs the wait policy (the cdylib's constructor); the default yields.
pub fn set_wait_policy(p: WaitPolicy) {
    POLICY.store(p as usize, Ordering::Release);
}

fn policy(rounds: u32) -> Wait {
    let p = POLICY.load(Ordering::Acquire);
    if p == 0 {
        return Wait::Yield;
    }
    // SAFETY: only `set_wait_policy` stores here, always a `WaitPolicy`.
    let f: WaitPolicy = unsafe { core::mem::transmute::<usize, WaitPolicy>(p) };
    f(rounds)
}

/// One round of waiting for something other than a lock (a condition another thread will
/// make true): spin a little, then do what the wait policy says (GiveUp yields here: the
/// caller bounds its own wait).
pub fn wait_a_little(rounds: u32) {
    for _ in 0..64 {
        core::hint::spin_loop();
    }
    match policy(rounds) {
        Wait::Spin => core::hint::spin_loop(),
        Wait::Yield | Wait::GiveUp => {
            let _ = crate::raw_syscall!(libc::SYS_sched_yield);
        }
    }
}

pub struct SpinLock<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: access to `value` is serialised by `state`.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: the lock owns its value.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub const fn new(value: T) -> Self {
        SpinLock {
            state: AtomicU32::new(0),
            value: UnsafeCell::new(value),
        }
    }

    #[inline(always)]
    pub fn lock(&self) -> SpinGuard<'_, T> {
        if !self.try_take() {
            self.lock_slow(false);
        }
        SpinGuard { lock: self }
    }

    /// Like `lock`, but None when the wait policy says the lock will never come free.
    #[inline(always)]
    pub fn lock_or_give_up(&self) -> Option<SpinGuard<'_, T>> {
        if self.try_take() || self.lock_slow(true) {
            Some(SpinGuard { lock: self })
        } else {
            None
        }
    }

    /// The lock if it is free right now.
    #[inline(always)]
    pub fn try_lock(&self) -> Option<SpinGuard<'_, T>> {
        // `then`, not `then_some`: a guard built eagerly and dropped on failure would
        // release the lock its holder still has.
        self.try_take().then(|| SpinGuard { lock: self })
    }

    #[inline(always)]
    fn try_take(&self) -> bool {
        self.state
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Waits for the lock; false only when allowed to give up and told to.
    #[cold]
    fn lock_slow(&self, may_give_up: bool) -> bool {
        let mut spins = 0u32;
        let mut rounds = 0u32;
        loop {
            if self.state.load(Ordering::Relaxed) == 0 && self.try_take() {
                return true;
            }
            spins += 1;
            if spins < 64 {
                core::hint::spin_loop();
                continue;
            }
            spins = 0;
            rounds = rounds.saturating_add(1);
            match policy(rounds) {
                Wait::Yield => {
                    let _ = crate::raw_syscall!(libc::SYS_sched_yield);
                }
                Wait::Spin => core::hint::spin_loop(),
                Wait::GiveUp if may_give_up => return false,
                Wait::GiveUp => {
                    let _ = crate::raw_syscall!(libc::SYS_sched_yield);
                }
            }
        }
    }

    /// Whether someone holds the lock now (in a forked child: a thread of the parent held it
    /// at the fork, and what it guards may be half-updated).
    pub fn is_locked(&self) -> bool {
        self.state.load(Ordering::Acquire) != 0
    }

    /// Take the lock and keep it until `force_unlock` (fork preparation).
    pub fn lock_forever(&self) {
        core::mem::forget(self.lock());
    }

    /// In a forked child: the lock free again and `value` in place of whatever the parent's
    /// threads left there (not dropped: it may be half-updated; leaking it is the safe choice).
    ///
    /// # Safety
    /// Only in a child process that has a single thread, before anything else uses the lock.
    pub unsafe fn replace_forgetting(&self, value: T) {
        // SAFETY: forwarded contract: nobody else can be using the value.
        unsafe { core::ptr::write(self.value.get(), value) };
        self.state.store(0, Ordering::Release);
    }

    /// In a forked child: the value behind a lock nobody holds, without taking the lock (which
    /// would write the lock's page, copy-on-write since the fork).
    ///
    /// # Safety
    /// Only in a child process that has a single thread, with the lock free, and with no
    /// other reference to the value alive.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn unlocked_in_child(&self) -> &mut T {
        // SAFETY: forwarded contract: the lock is free and nobody else can use the value.
        unsafe { &mut *self.value.get() }
    }

    /// Release a lock taken with `lock_forever`.
    ///
    /// # Safety
    /// Only the party that called `lock_forever` (or the sole thread of a forked child that
    /// inherited it) may call this.
    pub unsafe fn force_unlock(&self) {
        self.state.store(0, Ordering::Release);
    }
}

pub struct SpinGuard<'a, T> {
    lock: &'a SpinLock<T>,
}

impl<T> core::ops::Deref for SpinGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &*self.lock.value.get() }
    }
}

impl<T> core::ops::DerefMut for SpinGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard proves exclusive access.
        unsafe { &mut *self.lock.value.get() }
    }
}

impl<T> Drop for SpinGuard<'_, T> {
    fn drop(&mut self) {
        self.lock.state.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests;

/// A few idle items (non-zero addresses: a thread's caches or side stack) kept for the next
/// thread, taken and given without ever waiting: a busy pool (another thread in it, or a lock
/// a fork copied held) just means a fresh item is made, or the given one freed.
pub struct IdlePool<const N: usize> {
    slots: SpinLock<[usize; N]>,
}

impl<const N: usize> Default for IdlePool<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> IdlePool<N> {
    pub const fn new() -> Self {
        IdlePool {
            slots: SpinLock::new([0; N]),
        }
    }

    /// An idle item, if there is one and the pool is free.
    pub fn take(&self) -> Option<usize> {
        let mut slots = self.slots.try_lock()?;
        slots.iter_mut().find(|s| **s != 0).map(core::mem::take)
    }

    /// Keeps `item` (non-zero) for reuse; false when the pool is full or busy, and the caller
    /// frees it.
    pub fn give(&self, item: usize) -> bool {
        if item == 0 {
            return false;
        }
        let Some(mut slots) = self.slots.try_lock() else {
            return false;
        };
        match slots.iter_mut().find(|s| **s == 0) {
            Some(s) => {
                *s = item;
                true
            }
            None => false,
        }
    }
}
