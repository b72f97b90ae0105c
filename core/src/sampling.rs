//! Sampling mode's pure parts: how far apart samples are, and which freed blocks may be
//! sampled ones.
//!
//! With OFFHEAP_SAMPLE_BYTES = m, each thread counts bytes down from an exponential draw of
//! mean m ([`next_gap`]) and tracks the allocation that crosses zero: a Poisson process over
//! allocated bytes, so a block of `size` bytes is chosen with probability 1 − exp(−size/m)
//! (the weight `aggregate::sample_weight` undoes).
//!
//! Most frees are of unsampled blocks; [`Filter`] answers "certainly not sampled" for them
//! with one load of a small table of counters (by address hash), so they never touch the live
//! table. Counters saturate instead of wrapping: a sampled block is never forgotten (a
//! saturated slot just sends every free that maps to it to the table).

use core::sync::atomic::{AtomicU16, Ordering};

/// The next sampling gap in bytes, an exponential draw of mean `mean` (at least 1), advancing
/// the thread's xorshift64* state `rng` (which must not be 0).
pub fn next_gap(rng: &mut u64, mean: u64) -> i64 {
    // xorshift64*: cheap and good enough to space samples.
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    // 53 random bits centred in their interval: u in (0, 1), never 0, so ln(u) is finite.
    let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    ((-u.ln()) * mean as f64) as i64 + 1
}

/// Counting filter of the addresses of live sampled blocks (see the module docs).
pub struct Filter {
    /// `mask + 1` counters in a mapping of ours that lives as long as the process, or null
    /// when not sampling (every block may be sampled: every free goes to the table).
    slots: *const AtomicU16,
    mask: usize,
}

// SAFETY: `slots` points at a mapping that is never unmapped and only accessed through
// atomics.
unsafe impl Sync for Filter {}
// SAFETY: as above.
unsafe impl Send for Filter {}

impl Filter {
    /// No filter (not sampling): `maybe_sampled` is always true.
    pub const fn none() -> Filter {
        Filter {
            slots: core::ptr::null(),
            mask: 0,
        }
    }

    /// A filter of `slots` counters (rounded up to a power of two), in a mapping of ours
    /// that is never freed; None when it cannot be mapped.
    pub fn new(slots: usize) -> Option<Filter> {
        let n = slots.max(1).next_power_of_two();
        let p = crate::sys::map_own(n * core::mem::size_of::<AtomicU16>()) as *const AtomicU16;
        if p.is_null() {
            return None;
        }
        Some(Filter {
            slots: p,
            mask: n - 1,
        })
    }

    /// The counter of blocks at `addr`: blocks are 16-byte aligned, so the low 4 bits are
    /// dropped before hashing.
    #[inline(always)]
    fn index(&self, addr: u64) -> usize {
        ((addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    #[inline(always)]
    fn slot(&self, addr: u64) -> Option<&AtomicU16> {
        if self.slots.is_null() {
            return None;
        }
        // SAFETY: index <= mask and the mapping has mask + 1 zero-initialised counters.
        Some(unsafe { &*self.slots.add(self.index(addr)) })
    }

    /// Whether a block at `addr` may be a sampled one (false: certainly not).
    #[inline(always)]
    pub fn maybe_sampled(&self, addr: u64) -> bool {
        self.slot(addr)
            .is_none_or(|s| s.load(Ordering::Relaxed) != 0)
    }

    /// A sampled block at `addr` became live (`live`) or was freed.
    pub fn note(&self, addr: u64, live: bool) {
        if let Some(s) = self.slot(addr) {
            bump(s, live);
        }
    }
}

/// Saturating add on a counter; a saturated counter stays saturated.
fn bump(slot: &AtomicU16, up: bool) {
    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| match (up, v) {
        (_, u16::MAX) => None, // saturated: stays, never wraps or forgets
        (true, v) => Some(v + 1),
        (false, 0) => None,
        (false, v) => Some(v - 1),
    });
}

#[cfg(test)]
mod tests;
