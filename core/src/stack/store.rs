//! The stack store: identical frame sequences share one id.
//!
//! Lookups are lock-free (an open-addressing index of ids over an append-only arena, both in
//! our own mappings); only a stack never seen before takes the insert lock. The store is
//! bounded by OFFHEAP_MAX_STACKS: past it, allocations get the reserved id 1 ("store full")
//! and a counter says how many stacks were dropped. Each entry also carries cumulative
//! allocation/free counters so the reporter can compute rates.

use super::End;
use crate::sync::SpinLock;
use crate::sys;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// "No stack captured" (stacks disabled, or re-entrant/early allocation).
pub const NO_STACK: u32 = 0;
/// The store was full when this stack was seen.
pub const STORE_FULL: u32 = 1;
const FIRST_ID: u32 = 2;
/// Average frames per stack the arena is sized for (virtual; pages are touched as used).
const ARENA_FRAMES_PER_STACK: usize = 48;

#[repr(C)]
pub struct Entry {
    pub hash: u64,
    pub frames_off: u32,
    pub len: u16,
    pub end: u8,
    _pad: u8,
}

/// Cumulative counters of one stack in one stripe.
#[repr(C)]
pub struct Counters {
    pub allocs: AtomicU64,
    pub frees: AtomicU64,
    pub alloc_bytes: AtomicU64,
    pub free_bytes: AtomicU64,
}

/// Threads update one of this many copies of every stack's counters; the dump adds the
/// stripes up. Stripe 0 is shared (updated with atomic read-modify-writes); each of the others
/// is owned by one thread at a time ([`StripeOwners`]), which updates it with plain loads and
/// stores: no locked instruction, no cache line shared with another thread.
pub const STRIPES: usize = 8;

/// Which exclusive stripes (1..STRIPES) are owned, one bit each.
pub struct StripeOwners(AtomicU32);

impl StripeOwners {
    pub const fn new() -> Self {
        StripeOwners(AtomicU32::new(0))
    }

    /// An exclusive stripe for the calling thread, or None when all are owned (it then uses
    /// the shared stripe 0).
    pub fn claim(&self) -> Option<u32> {
        let mut owned = self.0.load(Ordering::Relaxed);
        loop {
            let free = (1..STRIPES as u32).find(|s| owned & (1 << s) == 0)?;
            match self.0.compare_exchange_weak(
                owned,
                owned | (1 << free),
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(free),
                Err(now) => owned = now,
            }
        }
    }

    /// The owner is done with `stripe` (thread exit); its counts stay in it.
    pub fn release(&self, stripe: u32) {
        if (1..STRIPES as u32).contains(&stripe) {
            self.0.fetch_and(!(1 << stripe), Ordering::Release);
        }
    }

    /// In a forked child: only the surviving thread's stripe (if exclusive) stays owned.
    pub fn keep_only(&self, stripe: u32) {
        let keep = if (1..STRIPES as u32).contains(&stripe) {
            1 << stripe
        } else {
            0
        };
        self.0.store(keep, Ordering::Relaxed);
    }

    pub fn owned(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Counters {
    /// Counts `n` allocations of `bytes`; `exclusive`: the caller owns this stripe.
    #[inline(always)]
    pub fn add_allocs(&self, n: u64, bytes: u64, exclusive: bool) {
        bump(&self.allocs, n, exclusive);
        bump(&self.alloc_bytes, bytes, exclusive);
    }

    /// Counts `n` frees of `bytes` (a wrapping add: `n` and `bytes` may be minus a count, to
    /// take one back).
    #[inline(always)]
    pub fn add_frees(&self, n: u64, bytes: u64, exclusive: bool) {
        bump(&self.frees, n, exclusive);
        bump(&self.free_bytes, bytes, exclusive);
    }
}

/// `c += v`: a plain load and store when only the caller writes `c` (readers may see the old
/// or the new value, never a torn one), a locked add otherwise.
#[inline(always)]
fn bump(c: &AtomicU64, v: u64, exclusive: bool) {
    if exclusive {
        c.store(c.load(Ordering::Relaxed).wrapping_add(v), Ordering::Relaxed);
    } else {
        c.fetch_add(v, Ordering::Relaxed);
    }
}

/// Sum of a stack's counters over all stripes.
#[derive(Default, Clone, Copy)]
pub struct Totals {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub free_bytes: u64,
}

pub struct Store {
    entries: *mut Entry,
    counters: [*mut Counters; STRIPES],
    index: *const AtomicU32,
    index_mask: usize,
    arena: *mut u64,
    arena_cap: usize,
    capacity: usize,
    next_id: AtomicU32,
    arena_used: AtomicU64,
    dropped: AtomicU64,
    insert_lock: SpinLock<()>,
}

// SAFETY: entries are written once under insert_lock before their id is published with
// Release; afterwards only atomics are mutated. The arena is append-only under the lock.
unsafe impl Sync for Store {}
// SAFETY: as above.
unsafe impl Send for Store {}

#[inline]
pub fn hash_frames(frames: &[u64]) -> u64 {
    let mut h: u64 = frames.len() as u64 ^ 0x51_7c_c1_b7_27_22_0a_95;
    for &f in frames {
        h = (h.rotate_left(5) ^ f).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
    h | 1
}

impl Store {
    /// Reserve the store's mappings (untouched pages cost nothing).
    pub fn new(capacity: usize) -> Option<Store> {
        let capacity = capacity.max(1024);
        let index_len = (capacity * 2).next_power_of_two();
        let entries = sys::map_own(capacity * core::mem::size_of::<Entry>()) as *mut Entry;
        let index = sys::map_own(index_len * 4) as *const AtomicU32;
        let arena_cap = capacity * ARENA_FRAMES_PER_STACK;
        let arena = sys::map_own(arena_cap * 8) as *mut u64;
        let mut counters = [core::ptr::null_mut(); STRIPES];
        for c in counters.iter_mut() {
            *c = sys::map_own(capacity * core::mem::size_of::<Counters>()) as *mut Counters;
            if c.is_null() {
                return None;
            }
        }
        if entries.is_null() || index.is_null() || arena.is_null() {
            return None;
        }
        Some(Store {
            entries,
            counters,
            index,
            index_mask: index_len - 1,
            arena,
            arena_cap,
            capacity,
            next_id: AtomicU32::new(FIRST_ID),
            arena_used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            insert_lock: SpinLock::new(()),
        })
    }

    #[inline(always)]
    pub fn entry(&self, id: u32) -> &Entry {
        debug_assert!((id as usize) < self.capacity);
        // SAFETY: ids handed out are < capacity (0 and 1 are valid reserved entries), and the
        // entries mapping has `capacity` zero-initialised entries.
        unsafe { &*self.entries.add(id as usize) }
    }

    /// Counters of stack `id` in stripe `stripe` (below STRIPES; larger values wrap).
    #[inline(always)]
    pub fn counters(&self, id: u32, stripe: u32) -> &Counters {
        let s = stripe as usize % STRIPES;
        // SAFETY: s < STRIPES; id < capacity as for `entry`; each stripe mapping has
        // `capacity` zeroed counters, only touched through atomics.
        unsafe { &*(*self.counters.as_ptr().add(s)).add(id as usize) }
    }

    /// Counters of stack `id` summed over the stripes.
    pub fn totals(&self, id: u32) -> Totals {
        let mut t = Totals::default();
        for s in 0..STRIPES as u32 {
            let c = self.counters(id, s);
            // Wrapping, as the counters are: a take-back (`add_frees` of minus one) counted
            // in another stripe than the free leaves that stripe "negative".
            t.allocs = t.allocs.wrapping_add(c.allocs.load(Ordering::Relaxed));
            t.frees = t.frees.wrapping_add(c.frees.load(Ordering::Relaxed));
            t.alloc_bytes = t
                .alloc_bytes
                .wrapping_add(c.alloc_bytes.load(Ordering::Relaxed));
            t.free_bytes = t
                .free_bytes
                .wrapping_add(c.free_bytes.load(Ordering::Relaxed));
        }
        t
    }

    /// Frames of a published stack.
    pub fn frames(&self, id: u32) -> &[u64] {
        let e = self.entry(id);
        // SAFETY: published entries point at `len` frames written before publication.
        unsafe {
            core::slice::from_raw_parts(self.arena.add(e.frames_off as usize), e.len as usize)
        }
    }

    #[inline]
    fn find(&self, h: u64, frames: &[u64]) -> Result<u32, usize> {
        let mut i = h as usize & self.index_mask;
        loop {
            // SAFETY: i <= index_mask, inside the index mapping.
            let id = unsafe { (*self.index.add(i)).load(Ordering::Acquire) };
            if id == 0 {
                return Err(i);
            }
            let e = self.entry(id);
            if e.hash == h && self.frames(id) == frames {
                return Ok(id);
            }
            i = (i + 1) & self.index_mask;
        }
    }

    /// The id of this stack, interning it if new.
    #[inline]
    pub fn intern(&self, frames: &[u64], end: End) -> u32 {
        let h = hash_frames(frames);
        if let Ok(id) = self.find(h, frames) {
            return id;
        }
        self.insert_slow(h, frames, end)
    }

    #[cold]
    fn insert_slow(&self, h: u64, frames: &[u64], end: End) -> u32 {
        let Some(_g) = self.insert_lock.lock_or_give_up() else {
            return NO_STACK;
        };
        let slot = match self.find(h, frames) {
            Ok(id) => return id,
            Err(slot) => slot,
        };
        let id = self.next_id.load(Ordering::Relaxed);
        let used = self.arena_used.load(Ordering::Relaxed) as usize;
        if id as usize >= self.capacity
            || used + frames.len() > self.arena_cap
            || (id as usize) * 2 > self.index_mask
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return STORE_FULL;
        }
        // SAFETY: [used, used + len) is inside the arena and not yet visible to anyone.
        unsafe {
            core::ptr::copy_nonoverlapping(frames.as_ptr(), self.arena.add(used), frames.len())
        };
        // SAFETY: entry `id` is unpublished: nobody else reads or writes it yet.
        unsafe {
            let e = self.entries.add(id as usize);
            (*e).hash = h;
            (*e).frames_off = used as u32;
            (*e).len = frames.len() as u16;
            (*e).end = end as u8;
        }
        self.arena_used
            .store((used + frames.len()) as u64, Ordering::Relaxed);
        self.next_id.store(id + 1, Ordering::Release);
        // SAFETY: slot <= index_mask.
        unsafe { (*self.index.add(slot)).store(id, Ordering::Release) };
        id
    }

    /// Ids in use: 0..id_limit.
    pub fn id_limit(&self) -> u32 {
        self.next_id.load(Ordering::Acquire)
    }

    /// Stacks whose walk ended on memory not proven readable.
    pub fn broken(&self) -> u64 {
        (2..self.id_limit())
            .filter(|&id| self.entry(id).end == End::Broken as u8)
            .count() as u64
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Bytes of store memory actually in use.
    pub fn bytes_used(&self) -> usize {
        self.id_limit() as usize
            * (core::mem::size_of::<Entry>() + STRIPES * core::mem::size_of::<Counters>())
            + self.arena_used.load(Ordering::Relaxed) as usize * 8
            + (self.index_mask + 1) * 4
    }

    pub fn fork_prepare(&self) {
        self.insert_lock.lock_forever();
    }

    /// # Safety
    /// Pairs with `fork_prepare`.
    pub unsafe fn fork_release(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.insert_lock.force_unlock() };
    }
}

#[cfg(test)]
mod tests;
