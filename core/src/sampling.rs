//! Sampling mode's pure parts: how far apart samples are, and which freed blocks may be
//! sampled ones.
//!
//! With OFFHEAP_SAMPLE_BYTES = m, each thread counts bytes down from an exponential draw of
//! mean m ([`next_gap`]) and tracks the allocation that crosses zero: a Poisson process over
//! allocated bytes, so a block of `size` bytes is chosen with probability 1 − exp(−size/m)
//! (the weight `aggregate::sample_weight` undoes).
//!
//! Most frees are of unsampled blocks; [`Filter`] answers "certainly not sampled" for them
//! with one load of a small bit set (by the address's 64 MiB window and its granule), so they
//! never touch the live table.
//! Its counters saturate instead of wrapping: a sampled block is never forgotten (a saturated
//! slot just sends every free that maps to it to the table).

use crate::sync::SpinLock;
use core::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};

/// The next sampling gap in bytes, an exponential draw of mean `mean` (at least 1), advancing
/// the thread's xorshift64* state `rng` (which must not be 0).
pub fn next_gap(rng: &mut u64, mean: u64) -> u64 {
    // xorshift64*: cheap and good enough to space samples.
    let mut x = *rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    // 53 random bits centred in their interval: u in (0, 1), never 0, so ln(u) is finite.
    let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    ((-ln_unit(u)) * mean as f64) as u64 + 1
}

/// ln(u) for u in (0, 1], a normal double, to within 1e-9: the gap's draw without a call into
/// libm, whose log is a few cold lines of someone else's code on every sample (15 % of the
/// library's time per sample on the tcache workload at 512 KiB).
///
/// u = m · 2^e with m in [√½, √2), so ln u = e·ln 2 + ln m, and with s = (m − 1)/(m + 1),
/// |s| ≤ 0.172, ln m = 2·(s + s³/3 + s⁵/5 + s⁷/7 + s⁹/9 + …); the first term left out is below
/// 2·0.172¹¹/11 < 1e-9.
pub fn ln_unit(u: f64) -> f64 {
    const MANTISSA: u64 = (1 << 52) - 1;
    let bits = u.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & MANTISSA) | (1023 << 52));
    if m > core::f64::consts::SQRT_2 {
        m *= 0.5;
        exponent += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let series =
        s * (2.0 + s2 * (2.0 / 3.0 + s2 * (2.0 / 5.0 + s2 * (2.0 / 7.0 + s2 * (2.0 / 9.0)))));
    exponent as f64 * core::f64::consts::LN_2 + series
}

/// Counting filter of the addresses of live sampled blocks (see the module docs): `GROUPS`
/// groups (one per 64 MiB address window, modulo `GROUPS`) of `WORDS * 64` slots each (both
/// powers of two).
///
/// Two arrays over the same slots: saturating counters, touched only when a sampled block is
/// born or freed, and one bit per slot ("some live sampled block maps here"), the only thing
/// an unsampled free reads. A cache line holds 512 slots' bits, so a group's bits stay in L1
/// next to an allocator that streams through megabytes (as 16-bit counters, 32 slots to a
/// line, most frees of workload 1 missed L1: 77 % of the free hook's time was that one load).
/// The library keeps one in a static: the hook reaches the bits without a pointer to follow.
///
/// Why groups: a glibc thread arena's heap is one 64 MiB-aligned window, so a thread's own
/// blocks fall in its arena's group, and the bits its frees read, the counters and the lock
/// its samples write, are lines no other thread touches in the common case. With one group,
/// every sample on one core took the lock line, a counter line and a bit line from the
/// other's cache and made its next frees miss: a sample cost ~1 µs at 2 threads against
/// ~0.3 µs at 1 (tcache workload). Main-arena blocks spread over consecutive windows, and so
/// over consecutive groups.
///
/// ```text
///   addr:  [ ... | window (addr >> 26) | ... | granule (addr >> 4) | 4 bits ]
///                  low bits → group g        granule mod slots → slot s in the group
///
///   flags:      everywhere: bool, noted groups (a line of its own; full tracking: no bit is read)
///   bits[g]:    b0 b1 ... b63 | b64 ... | ... (WORDS words)   bit s set ⇔ counts[s] != 0
///   notes[g]:   lock | counts: u16 per slot                   (changed together, under the lock)
/// ```
#[repr(C)]
pub struct Filter<const GROUPS: usize, const WORDS: usize> {
    flags: Flags,
    bits: [[AtomicU64; WORDS]; GROUPS],
    notes: [Notes<WORDS>; GROUPS],
}

/// Read by every free, written almost never: alone in their line, so no note moves it.
#[repr(C, align(64))]
struct Flags {
    /// Full tracking: every block may have a record, and no bit is read (a bit set probe on
    /// every free, all ones, cost full tracking 1.3 D1 misses per pair on workload 1).
    everywhere: AtomicBool,
    /// Groups whose notes were ever used, bit `g % 64`, set before the group's lock is first
    /// taken: a forked child visits those alone. Reading every group's lock faulted in 64
    /// pages of zeroes in every child of a program that never sampled (64 of the 107 page
    /// faults ours added to a shell's `$(echo)` subshell).
    noted_groups: AtomicU64,
}

/// Where a probe finds a block's bit (see [`Filter::PROBE`]), in bytes from the filter's
/// start: the `everywhere` flag's byte; else, with `slot = addr >> 4`, bit `slot % 64` of the
/// word at `bits_offset + ((addr >> group_shift) & group_field) + ((slot >> 6) & word_mask) * 8`.
/// (`(addr >> group_shift) & group_field` is the address's group times a group's bytes in
/// one shift and mask: a group's bits are a power of two of bytes.)
#[derive(Clone, Copy, Debug)]
pub struct ProbeGeometry {
    pub everywhere_offset: usize,
    pub bits_offset: usize,
    pub group_shift: u32,
    pub group_field: usize,
    pub word_mask: usize,
}

/// A group's counters and the lock that serialises its notes, so a slot's counter and bit
/// change together: a free taking the counter to 0 and a birth raising it again cannot
/// interleave to leave the bit clear while the newborn is live, even for a moment (a free on
/// another thread in that moment would miss the record: a phantom leak). Notes are rare, one
/// per sampled birth or free.
#[repr(C, align(64))]
struct Notes<const WORDS: usize> {
    lock: SpinLock<()>,
    counts: [[AtomicU16; 64]; WORDS],
}

/// Bits of an address below its 64 MiB window (glibc's HEAP_MAX_SIZE on 64-bit, as the live
/// table's groups).
pub const WINDOW_SHIFT: u32 = 26;

impl<const GROUPS: usize, const WORDS: usize> Filter<GROUPS, WORDS> {
    const SLOT_MASK: usize = {
        assert!(GROUPS.is_power_of_two() && WORDS.is_power_of_two());
        WORDS * 64 - 1
    };

    /// The probe's geometry, for a hook that probes in assembly (the interposer's `free` on
    /// x86_64): the same numbers `index` and `bit` use, and where the fields lie.
    pub const PROBE: ProbeGeometry = {
        let group_bytes = core::mem::size_of::<[AtomicU64; WORDS]>();
        let group_bits = group_bytes.trailing_zeros();
        assert!(group_bits <= WINDOW_SHIFT && GROUPS * group_bytes <= u32::MAX as usize);
        ProbeGeometry {
            everywhere_offset: core::mem::offset_of!(Self, flags)
                + core::mem::offset_of!(Flags, everywhere),
            bits_offset: core::mem::offset_of!(Self, bits),
            group_shift: WINDOW_SHIFT - group_bits,
            group_field: (GROUPS - 1) * group_bytes,
            word_mask: Self::SLOT_MASK / 64,
        }
    };

    /// An empty filter: every block is certainly not sampled (nothing is tracked yet).
    pub const fn new() -> Self {
        Filter {
            flags: Flags {
                everywhere: AtomicBool::new(false),
                noted_groups: AtomicU64::new(0),
            },
            bits: [const { [const { AtomicU64::new(0) }; WORDS] }; GROUPS],
            notes: [const {
                Notes {
                    lock: SpinLock::new(()),
                    counts: [const { [const { AtomicU16::new(0) }; 64] }; WORDS],
                }
            }; GROUPS],
        }
    }

    /// Every block may be sampled (full tracking: every free goes to the table). Notes are
    /// not made in this state.
    pub fn maybe_everywhere(&self) {
        self.flags.everywhere.store(true, Ordering::Release);
    }

    /// The group and slot of blocks at `addr`: the group from the address's window, the slot
    /// from its 16-byte granule (blocks are 16-byte aligned), modulo the group's slots.
    ///
    /// Why the granule itself and not a hash of it: consecutive blocks land in consecutive
    /// slots, so the frees of a thread's working set read a few lines of bits (a line covers
    /// 8 KiB of heap) where a hash sent each to a random line of its group's 2 KiB, and the
    /// probe is a shift and a mask. Three instructions fewer than a fold of the higher bits
    /// measured 0.1–0.3 ns a pair less on tcache (1 and 2 threads), and a multiplicative
    /// hash cost more again. What a plain modulus gives up: blocks 256 KiB apart share a
    /// slot. The blocks glibc places that regularly are its mmapped chunks (page-aligned
    /// headers), whose free is a munmap: a needless table look-up beside a system call.
    #[inline(always)]
    fn index(&self, addr: u64) -> (usize, usize) {
        let group = (addr >> WINDOW_SHIFT) as usize & (GROUPS - 1);
        let slot = (addr >> 4) as usize;
        (group, slot & Self::SLOT_MASK)
    }

    /// The word holding slot `s`'s bit in group `g`, and the bit. (Always there: `g` and
    /// `s / 64` are masked into range, and the compiler sees it, so the None arm is not
    /// even compiled.)
    #[inline(always)]
    fn bit(&self, (g, s): (usize, usize)) -> Option<(&AtomicU64, u64)> {
        let word = self.bits.get(g % GROUPS)?.get((s / 64) % WORDS)?;
        Some((word, 1u64 << (s % 64)))
    }

    /// Whether a block at `addr` may be a sampled one (false: certainly not).
    #[inline(always)]
    pub fn maybe_sampled(&self, addr: u64) -> bool {
        if self.flags.everywhere.load(Ordering::Relaxed) {
            return true;
        }
        self.bit(self.index(addr))
            .is_none_or(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
    }

    /// Starts loading the lines `note(addr, …)` writes, the group's lock and the slot's
    /// counter, so that a tracked path's other misses (the live table's) overlap with theirs.
    #[inline(always)]
    pub fn prefetch_note(&self, addr: u64) {
        let (g, s) = self.index(addr);
        let Some(notes) = self.notes.get(g % GROUPS) else {
            return;
        };
        crate::sys::prefetch(&notes.lock as *const SpinLock<()> as *const u8);
        if let Some(count) = notes
            .counts
            .get((s / 64) % WORDS)
            .and_then(|c| c.get(s % 64))
        {
            crate::sys::prefetch(count as *const AtomicU16 as *const u8);
        }
    }

    /// A sampled block at `addr` became live (`live`) or was freed. The bit is set with the
    /// first live block of its slot and cleared with the last, under the group's lock:
    /// readers never see a slot with a live block and a clear bit.
    pub fn note(&self, addr: u64, live: bool) {
        let (g, s) = self.index(addr);
        let Some(notes) = self.notes.get(g % GROUPS) else {
            return;
        };
        let count = notes
            .counts
            .get((s / 64) % WORDS)
            .and_then(|c| c.get(s % 64));
        let (Some(count), Some((word, bit))) = (count, self.bit((g, s))) else {
            return;
        };
        let group_bit = 1u64 << (g % 64);
        if self.flags.noted_groups.load(Ordering::Relaxed) & group_bit == 0 {
            // A locked read-modify-write, before the lock's: a child forked while the lock is
            // held finds the group's bit set too.
            self.flags
                .noted_groups
                .fetch_or(group_bit, Ordering::SeqCst);
        }
        // A child born without fork handlers may find the lock held by a thread it does not
        // have: it then errs towards "maybe" (counts a birth, forgets nothing on a free).
        let held = notes.lock.lock_or_give_up();
        if live {
            bump(count, true);
            word.fetch_or(bit, Ordering::Release);
        } else if held.is_some() && bump(count, false) == Some(1) {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// In a forked child: notes work again even if a thread of the parent was making one at
    /// the fork (its slot may keep a bit set: a false "maybe", which costs a lookup).
    ///
    /// # Safety
    /// Only in a child process that has a single thread.
    pub unsafe fn after_fork_in_child(&self) {
        let noted = self.flags.noted_groups.load(Ordering::SeqCst);
        for (g, notes) in self.notes.iter().enumerate() {
            if noted & (1u64 << (g % 64)) == 0 {
                continue; // never locked
            }
            if notes.lock.is_locked() {
                // SAFETY: forwarded contract: the thread that held it does not exist here.
                unsafe { notes.lock.force_unlock() };
            }
        }
    }
}

impl<const GROUPS: usize, const WORDS: usize> Default for Filter<GROUPS, WORDS> {
    fn default() -> Self {
        Self::new()
    }
}

/// Saturating add on a counter; a saturated counter stays saturated. Returns the value it
/// replaced, or None when it was left alone.
fn bump(slot: &AtomicU16, up: bool) -> Option<u16> {
    slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| match (up, v) {
        (_, u16::MAX) => None, // saturated: stays, never wraps or forgets
        (true, v) => Some(v + 1),
        (false, 0) => None,
        (false, v) => Some(v - 1),
    })
    .ok()
}

#[cfg(test)]
mod tests;
