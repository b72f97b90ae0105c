//! Blocks glibc handed out before the library knew which allocator the program uses.
//!
//! When the program links an allocator of its own (jemalloc, tcmalloc, one defined in the
//! executable), every call is forwarded to it — but blocks glibc gave out before that
//! decision (ld.so and early constructors) must go back to glibc when freed, or the wrong
//! allocator frees them. The set must answer "is this one of them?" on every `free`,
//! without a lock and without forgetting a block:
//!
//! - glibc's small blocks of that time lie in its brk heap, below the break at the moment of
//!   the decision; another allocator that uses sbrk grows the break above it, so one range
//!   check answers for all of them ([`EarlyBlocks::seal`]);
//! - the rest (glibc's mmapped chunks of 128 KiB and more) go into a small open-addressing
//!   set of atomic slots, filled only before the decision, emptied by compare-and-swap.
//!
//! The bound: at most `SLOTS` such large blocks can be remembered; more are counted in
//! `overflow` (and their frees would reach the program's allocator), which a start-up phase
//! does not come near.

use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

const SLOTS: usize = 1024;
const EMPTY: u64 = 0;
const GONE: u64 = 1;

pub struct EarlyBlocks {
    slots: [AtomicU64; SLOTS],
    /// [lo, hi) of the brk heap part the early small blocks lie in.
    lo: AtomicU64,
    hi: AtomicU64,
    /// Lowest small block seen while recording.
    lowest: AtomicU64,
    recording: AtomicBool,
    overflow: AtomicUsize,
}

fn hash(addr: u64) -> usize {
    ((addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize % SLOTS
}

impl EarlyBlocks {
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const Z: AtomicU64 = AtomicU64::new(EMPTY);
        EarlyBlocks {
            slots: [Z; SLOTS],
            lo: AtomicU64::new(0),
            hi: AtomicU64::new(0),
            lowest: AtomicU64::new(u64::MAX),
            recording: AtomicBool::new(true),
            overflow: AtomicUsize::new(0),
        }
    }

    // Inline: every malloc and free asks, and a call across the crate costs more than the load.
    #[inline(always)]
    pub fn recording(&self) -> bool {
        self.recording.load(Ordering::Relaxed)
    }

    /// A block glibc just handed out (while recording); `large` for a chunk glibc mmapped.
    pub fn record(&self, addr: u64, large: bool) {
        if addr <= GONE || !self.recording() {
            return;
        }
        if !large {
            self.lowest.fetch_min(addr, Ordering::Relaxed);
            return;
        }
        let start = hash(addr);
        for i in 0..SLOTS {
            let Some(slot) = self.slots.get((start + i) % SLOTS) else {
                break;
            };
            let v = slot.load(Ordering::Relaxed);
            if (v == EMPTY || v == GONE)
                && slot
                    .compare_exchange(v, addr, Ordering::AcqRel, Ordering::Relaxed)
                    .is_ok()
            {
                return;
            }
        }
        self.overflow.fetch_add(1, Ordering::Relaxed);
    }

    /// A block freed or reallocated while recording is no longer glibc's to remember.
    #[inline(always)]
    pub fn forget_while_recording(&self, addr: u64) {
        if self.recording() {
            self.take(addr);
        }
    }

    /// The decision is made: the small blocks lie in [lowest, `brk_now`).
    pub fn seal(&self, brk_now: u64) {
        let lowest = self.lowest.load(Ordering::Relaxed);
        if lowest != u64::MAX && brk_now > lowest {
            self.lo.store(lowest, Ordering::Relaxed);
            self.hi.store(brk_now, Ordering::Relaxed);
        }
        self.recording.store(false, Ordering::Release);
    }

    fn find(&self, addr: u64) -> Option<&AtomicU64> {
        let start = hash(addr);
        for i in 0..SLOTS {
            let slot = self.slots.get((start + i) % SLOTS)?;
            match slot.load(Ordering::Acquire) {
                EMPTY => return None,
                v if v == addr => return Some(slot),
                _ => {}
            }
        }
        None
    }

    /// Whether `addr` is an early glibc block (still live as far as we know).
    pub fn contains(&self, addr: u64) -> bool {
        let (lo, hi) = (
            self.lo.load(Ordering::Relaxed),
            self.hi.load(Ordering::Relaxed),
        );
        (lo <= addr && addr < hi) || self.find(addr).is_some()
    }

    /// Whether `addr` is an early glibc block, forgetting a large one (it is being freed).
    pub fn take(&self, addr: u64) -> bool {
        let (lo, hi) = (
            self.lo.load(Ordering::Relaxed),
            self.hi.load(Ordering::Relaxed),
        );
        if lo <= addr && addr < hi {
            return true;
        }
        match self.find(addr) {
            Some(slot) => slot
                .compare_exchange(addr, GONE, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok(),
            None => false,
        }
    }

    /// Large blocks that could not be remembered.
    pub fn overflow(&self) -> usize {
        self.overflow.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_blocks_are_a_range_after_sealing() {
        let e = EarlyBlocks::new();
        e.record(0x5000, false);
        e.record(0x3000, false);
        e.seal(0x9000);
        assert!(e.contains(0x3000) && e.contains(0x8ff0));
        assert!(!e.contains(0x2ff0) && !e.contains(0x9000));
        assert!(!e.recording());
        e.record(0x1_0000, true);
        assert!(!e.contains(0x1_0000), "nothing is recorded after sealing");
    }

    #[test]
    fn large_blocks_are_taken_once() {
        let e = EarlyBlocks::new();
        e.record(0x7f00_0000_0010, true);
        e.record(0x7f00_1000_0010, true);
        e.seal(0);
        assert!(e.take(0x7f00_0000_0010));
        assert!(!e.take(0x7f00_0000_0010), "gone once taken");
        assert!(e.contains(0x7f00_1000_0010));
        assert!(!e.contains(0x7f00_2000_0010));
    }

    #[test]
    fn every_slot_can_be_used_and_overflow_is_counted() {
        let e = EarlyBlocks::new();
        for i in 0..SLOTS as u64 + 5 {
            e.record(0x1000_0000 + i * 0x1000 + 16, true);
        }
        assert_eq!(e.overflow(), 5);
        for i in 0..SLOTS as u64 {
            assert!(e.contains(0x1000_0000 + i * 0x1000 + 16), "{i}");
        }
        // Freed slots are reused while recording.
        assert!(e.take(0x1000_0010));
        e.record(0x2000_0010, true);
        assert!(e.contains(0x2000_0010));
    }

    #[test]
    fn freed_while_recording_is_forgotten() {
        let e = EarlyBlocks::new();
        e.record(0x7000_0010, true);
        e.forget_while_recording(0x7000_0010);
        e.seal(0);
        assert!(!e.contains(0x7000_0010));
    }
}
