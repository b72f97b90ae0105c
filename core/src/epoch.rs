//! Epoch-based reclamation: when may a value that lock-free readers use be freed?
//!
//! Stack walks read the module set (unwind tables, code ranges) without a lock, on any thread,
//! from inside malloc. A rebuild publishes a new set by pointer swap; the old one may be freed
//! only when no walk still uses it, and an unloaded library's `.eh_frame` may be unmapped only
//! when no walk can still reach it. "Ten seconds later" is not an answer: a thread can stop in
//! the middle of a walk for as long as it likes (SIGSTOP of one thread under ptrace, a
//! debugger, a descheduled VM).
//!
//! Each reading thread owns a *slot*. Around every read it *pins* (writes the global epoch it
//! saw into its slot) and *unpins* (marks the slot quiescent). A writer that replaced a value
//! *retires* it, which advances the epoch and returns the retirement epoch `r`; the value is
//! free to go once every slot is quiescent or pinned at an epoch after `r`.
//!
//! ```text
//!  slot word:   0          free: no thread owns the slot
//!               1          owned, quiescent: its thread is not reading
//!               e >= 2     owned, pinned: the thread began reading in epoch e (or later)
//!
//!  reader:   e = EPOCH          writer:  swap(PTR, new)          (SeqCst)
//!            slot = e (SeqCst)           r = EPOCH++             (SeqCst)
//!            p = PTR  (SeqCst)           ... later: every slot <= 1 or > r  ⇒  free old
//!            read *p
//!            slot = 1
//! ```
//!
//! Why it is sound: all five steps are sequentially consistent. If a scan reads a slot at `1`,
//! the reader's later `slot = e` comes after the scan in the total order, so its `p = PTR`
//! comes after the swap and sees the new value. If it reads `e > r`, the reader read the
//! epoch after `EPOCH++`, hence after the swap, and again sees the new value. Only a slot
//! pinned at `e <= r` may hold the old one, and the scan waits for it. No timing assumption
//! anywhere: a reader stopped for an hour keeps its value alive for an hour.
//!
//! The reader's cost is one `xchg` (the SeqCst store) and one plain store per walk: no shared
//! cache line is written, so readers on different cores do not contend.

use crate::sync::SpinLock;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Slots per domain: threads that read concurrently *and* are alive. A thread beyond this
/// gets no slot, and its walks are refused (the caller records a one-frame stack).
pub const SLOTS: usize = 4096;

const FREE: u64 = 0;
const QUIESCENT: u64 = 1;
const FIRST_EPOCH: u64 = 2;

/// One slot per cache line: each thread writes its own on every walk, and two slots on one
/// line would move it between the threads' cores on every write.
#[repr(align(64))]
struct PaddedSlot(AtomicU64);

impl core::ops::Deref for PaddedSlot {
    type Target = AtomicU64;
    fn deref(&self) -> &AtomicU64 {
        &self.0
    }
}

pub struct Domain {
    epoch: AtomicU64,
    slots: [PaddedSlot; SLOTS],
    /// One past the highest slot ever claimed: scans stop there.
    high: AtomicUsize,
}

/// A slot index, as a thread keeps it (in its thread-local state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(pub u32);

/// Proof that the calling thread is pinned; unpins on drop (unless it was nested).
pub struct Pinned<'a> {
    domain: &'a Domain,
    slot: usize,
    outer: bool,
}

impl Drop for Pinned<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        if self.outer {
            if let Some(s) = self.domain.slots.get(self.slot) {
                s.store(QUIESCENT, Ordering::Release);
            }
        }
    }
}

impl Domain {
    pub const fn new() -> Self {
        Domain {
            epoch: AtomicU64::new(FIRST_EPOCH),
            slots: [const { PaddedSlot(AtomicU64::new(FREE)) }; SLOTS],
            high: AtomicUsize::new(0),
        }
    }

    /// A free slot for the calling thread, or None when all are owned.
    pub fn claim(&self) -> Option<Slot> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.load(Ordering::Relaxed) == FREE
                && s.compare_exchange(FREE, QUIESCENT, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                self.high.fetch_max(i + 1, Ordering::AcqRel);
                return Some(Slot(i as u32));
            }
        }
        None
    }

    /// Gives a slot back (its thread is exiting). The thread must not be pinned.
    pub fn release(&self, slot: Slot) {
        if let Some(s) = self.slots.get(slot.0 as usize) {
            s.store(FREE, Ordering::Release);
        }
    }

    /// Pins the calling thread, which owns `slot`. Nested pins are free and keep the outer
    /// epoch (a value the outer read may hold stays protected).
    #[inline(always)]
    pub fn pin(&self, slot: Slot) -> Pinned<'_> {
        let i = slot.0 as usize;
        let Some(s) = self.slots.get(i) else {
            return Pinned {
                domain: self,
                slot: i,
                outer: false,
            };
        };
        // Only this thread writes its slot, so a relaxed read of it is exact.
        let outer = s.load(Ordering::Relaxed) < FIRST_EPOCH;
        if outer {
            let e = self.epoch.load(Ordering::SeqCst);
            s.store(e, Ordering::SeqCst);
        }
        Pinned {
            domain: self,
            slot: i,
            outer,
        }
    }

    /// Called right after unpublishing a value (the swap must be SeqCst): its retirement
    /// epoch, to pass to [`Domain::quiescent`].
    pub fn retire(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst)
    }

    /// Whether no reader can still hold a value retired in epoch `r`, ignoring `except` (the
    /// caller's own slot, when it knows it is not reading).
    pub fn quiescent(&self, r: u64, except: Option<Slot>) -> bool {
        let high = self.high.load(Ordering::Acquire).min(SLOTS);
        let skip = except.map(|s| s.0 as usize);
        self.slots
            .get(..high)
            .unwrap_or(&[])
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != skip)
            .all(|(_, s)| {
                let v = s.load(Ordering::SeqCst);
                v < FIRST_EPOCH || v > r
            })
    }

    /// Whether `slot` is pinned now (a thread asking about itself).
    pub fn is_pinned(&self, slot: Slot) -> bool {
        self.slots
            .get(slot.0 as usize)
            .is_some_and(|s| s.load(Ordering::Relaxed) >= FIRST_EPOCH)
    }

    /// In a forked child, whose only thread owns `keep` (if any): every other slot belonged
    /// to a thread that does not exist here.
    pub fn forget_other_threads(&self, keep: Option<Slot>) {
        let keep = keep.map(|s| s.0 as usize);
        let high = self.high.load(Ordering::Acquire).min(SLOTS);
        for (i, s) in self.slots.get(..high).unwrap_or(&[]).iter().enumerate() {
            // Only slots that are taken are written: the slots are a page-sized array that
            // fork just made copy-on-write, and a forked child should not copy it for nothing.
            if Some(i) != keep && s.load(Ordering::Relaxed) != FREE {
                s.store(FREE, Ordering::Relaxed);
            }
        }
    }

    /// Slots owned now (tests, self-stats).
    pub fn owned(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.load(Ordering::Relaxed) != FREE)
            .count()
    }
}

/// Values retired but possibly still read: (retirement epoch, pointer as usize).
pub struct Limbo {
    list: SpinLock<Vec<(u64, usize)>>,
}

impl Limbo {
    pub const fn new() -> Self {
        Limbo {
            list: SpinLock::new(Vec::new()),
        }
    }

    pub fn push(&self, retired_in: u64, value: usize) {
        self.list.lock().push((retired_in, value));
    }

    /// Takes out the values no reader can still hold; the caller frees them.
    pub fn take_ready(&self, domain: &Domain, except: Option<Slot>) -> Vec<usize> {
        let mut list = self.list.lock();
        let mut ready = Vec::new();
        list.retain(|&(r, v)| {
            let free = domain.quiescent(r, except);
            if free {
                ready.push(v);
            }
            !free
        });
        ready
    }

    /// Takes out everything, readers or not: the unsound "free at once" a test uses to prove
    /// that it can catch a walk reading freed memory. Never used otherwise.
    pub fn take_ready_ignoring_readers(&self) -> Vec<usize> {
        self.list.lock().drain(..).map(|(_, v)| v).collect()
    }

    pub fn len(&self) -> usize {
        self.list.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fork preparation: hold the list's lock across fork.
    pub fn lock_forever(&self) {
        self.list.lock_forever();
    }

    /// # Safety
    /// Pairs with `lock_forever`, as `SpinLock::force_unlock`.
    pub unsafe fn force_unlock(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.list.force_unlock() };
    }
}

#[cfg(test)]
mod tests;
