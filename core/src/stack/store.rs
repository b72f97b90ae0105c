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
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, Ordering};

/// "No stack captured" (stacks disabled, or re-entrant/early allocation).
pub const NO_STACK: u32 = 0;
/// The store was full when this stack was seen.
pub const STORE_FULL: u32 = 1;
const FIRST_ID: u32 = 2;
/// The smallest store `new` makes, whatever it is asked for.
pub const MIN_CAPACITY: usize = 1024;
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
///
/// There are enough for the allocating threads of a large service. With 8, the eighth thread
/// on shared the atomic stripe 0 with every later one: on the tcache workload (2 cores) the
/// overhead of a pair under full tracking was 33 ns at 4 threads, 40 ns at 8 and 55 ns at 12,
/// the cost that grows with threads. Past 255 threads at once, later ones share stripe 0
/// again: the bound on what the stripes may cost is STRIPES × [`EXCLUSIVE_IDS`] counters.
pub const STRIPES: usize = 256;
/// Stack ids an exclusive stripe counts: 512 KiB of counters, mapped by the stripe's first
/// owner when it first counts, resident only where touched. Later ids count in the shared
/// stripe. Ids are handed out in order, so a service's hot stacks are among the first
/// (rocksdbsvc interns 3,293). When every stripe covered every id, 32 threads that each
/// counted 131,072 stacks held 4 MiB of counters each: 185 MiB of RSS where 82 MiB had done
/// (BENCHMARKS.md, ninth pass); a stripe now costs at most 512 KiB.
pub const EXCLUSIVE_IDS: usize = 16384;
const OWNER_WORDS: usize = STRIPES / 64;

/// Which exclusive stripes (1..STRIPES) are owned, one bit each.
pub struct StripeOwners([AtomicU64; OWNER_WORDS]);

impl StripeOwners {
    pub const fn new() -> Self {
        StripeOwners([const { AtomicU64::new(0) }; OWNER_WORDS])
    }

    /// The lowest free exclusive stripe for the calling thread, or None when all are owned (it
    /// then uses the shared stripe 0).
    pub fn claim(&self) -> Option<u32> {
        for (w, word) in self.0.iter().enumerate() {
            // Bit 0 of word 0 is the shared stripe: never handed out.
            let never = if w == 0 { 1 } else { 0 };
            let mut owned = word.load(Ordering::Relaxed);
            loop {
                let free = !(owned | never);
                if free == 0 {
                    break;
                }
                let bit = free.trailing_zeros();
                match word.compare_exchange_weak(
                    owned,
                    owned | 1 << bit,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Some((w * 64) as u32 + bit),
                    Err(now) => owned = now,
                }
            }
        }
        None
    }

    /// The word and bit of an exclusive stripe; None for the shared and out-of-range ones.
    fn place(&self, stripe: u32) -> Option<(&AtomicU64, u64)> {
        if stripe == 0 {
            return None;
        }
        let word = self.0.get(stripe as usize / 64)?;
        Some((word, 1 << (stripe % 64)))
    }

    /// The owner is done with `stripe` (thread exit); its counts stay in it.
    pub fn release(&self, stripe: u32) {
        if let Some((word, bit)) = self.place(stripe) {
            word.fetch_and(!bit, Ordering::Release);
        }
    }

    /// In a forked child: only the surviving thread's stripe (if exclusive) stays owned.
    pub fn keep_only(&self, stripe: u32) {
        for word in &self.0 {
            word.store(0, Ordering::Relaxed);
        }
        if let Some((word, bit)) = self.place(stripe) {
            word.store(bit, Ordering::Relaxed);
        }
    }

    /// The stripes owned now, in order.
    pub fn owned(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, word)| {
            let bits = word.load(Ordering::Relaxed);
            (0..64u32)
                .filter(move |b| bits & 1 << b != 0)
                .map(move |b| (w * 64) as u32 + b)
        })
    }
}

/// Where one thread counts for one stack: its own stripe's counters (`exclusive`: plain
/// loads and stores) or the shared stripe's (atomic adds).
pub struct Bump<'a> {
    counters: &'a Counters,
    exclusive: bool,
}

impl Bump<'_> {
    /// Counts `n` allocations of `bytes`.
    #[inline(always)]
    pub fn add_allocs(&self, n: u64, bytes: u64) {
        bump(&self.counters.allocs, n, self.exclusive);
        bump(&self.counters.alloc_bytes, bytes, self.exclusive);
    }

    /// Counts `n` frees of `bytes` (a wrapping add: `n` and `bytes` may be minus a count, to
    /// take one back).
    #[inline(always)]
    pub fn add_frees(&self, n: u64, bytes: u64) {
        bump(&self.counters.frees, n, self.exclusive);
        bump(&self.counters.free_bytes, bytes, self.exclusive);
    }
}

impl core::ops::Deref for Bump<'_> {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        self.counters
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

fn add_counters(sum: &mut [u64; 4], c: &Counters) {
    // Wrapping, as the counters are: a take-back (`add_frees` of minus one) counted in
    // another stripe than the free leaves that stripe "negative".
    sum[0] = sum[0].wrapping_add(c.allocs.load(Ordering::Relaxed));
    sum[1] = sum[1].wrapping_add(c.frees.load(Ordering::Relaxed));
    sum[2] = sum[2].wrapping_add(c.alloc_bytes.load(Ordering::Relaxed));
    sum[3] = sum[3].wrapping_add(c.free_bytes.load(Ordering::Relaxed));
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
    /// Stripe 0: every stack's counters, for threads without a stripe of their own.
    shared: *mut Counters,
    /// The exclusive stripes' counters for ids below EXCLUSIVE_IDS: STRIPES pointers (slot 0
    /// unused), null until the stripe's first owner first counts. A mapping, not an array in
    /// the store: inline, its 2 KiB moved the state's hot fields apart, and a tcache pair
    /// took 1 ns more.
    exclusive: *const AtomicPtr<Counters>,
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

/// A store dropped (the state could not be built after it, or a unit test's) gives its
/// mappings back: the exclusive stripes' counters, then its own.
impl Drop for Store {
    fn drop(&mut self) {
        for stripe in 1..STRIPES {
            if let Some(counters) = self.mapped_exclusive(stripe) {
                sys::unmap_own(
                    counters as *const [Counters; EXCLUSIVE_IDS] as *mut u8,
                    EXCLUSIVE_IDS * core::mem::size_of::<Counters>(),
                );
            }
        }
        let index_len = self.index_mask + 1;
        let sizes = Self::mapping_sizes(self.capacity, index_len, self.arena_cap);
        let parts = [
            self.entries as *mut u8,
            self.index as *mut u8,
            self.arena as *mut u8,
            self.shared as *mut u8,
            self.exclusive as *mut u8,
        ];
        Self::unmap_parts(&parts, &sizes);
    }
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
    /// None when a mapping is refused (a tight `RLIMIT_AS`): those already made are unmapped
    /// again, so a library that goes inert keeps no address space of the host's.
    pub fn new(capacity: usize) -> Option<Store> {
        let capacity = capacity.max(MIN_CAPACITY);
        let (index_len, arena_cap) = Self::derived_sizes(capacity);
        let sizes = Self::mapping_sizes(capacity, index_len, arena_cap);
        let mut parts = [core::ptr::null_mut::<u8>(); 5];
        for (part, &len) in parts.iter_mut().zip(sizes.iter()) {
            *part = sys::map_own(len);
            if part.is_null() {
                Self::unmap_parts(&parts, &sizes);
                return None;
            }
        }
        let [entries, index, arena, shared, exclusive] = parts;
        Some(Store {
            entries: entries as *mut Entry,
            shared: shared as *mut Counters,
            exclusive: exclusive as *const AtomicPtr<Counters>,
            index: index as *const AtomicU32,
            index_mask: index_len - 1,
            arena: arena as *mut u64,
            arena_cap,
            capacity,
            next_id: AtomicU32::new(FIRST_ID),
            arena_used: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            insert_lock: SpinLock::new(()),
        })
    }

    /// The index's slots and the arena's frames for `capacity` stacks.
    const fn derived_sizes(capacity: usize) -> (usize, usize) {
        (
            (capacity * 2).next_power_of_two(),
            capacity * ARENA_FRAMES_PER_STACK,
        )
    }

    /// Bytes of address space `new(capacity)` reserves (not resident: pages are backed as
    /// stacks arrive).
    pub fn reserved_bytes(capacity: usize) -> usize {
        let capacity = capacity.max(MIN_CAPACITY);
        let (index_len, arena_cap) = Self::derived_sizes(capacity);
        Self::mapping_sizes(capacity, index_len, arena_cap)
            .iter()
            .map(|&len| sys::round_up(len, sys::PAGE))
            .sum()
    }

    /// The most stacks a store reserving at most `budget` bytes can hold (at least
    /// [`MIN_CAPACITY`], at most `wanted`).
    pub fn capacity_within(budget: usize, wanted: usize) -> usize {
        let (mut lo, mut hi) = (MIN_CAPACITY, wanted.max(MIN_CAPACITY));
        if Self::reserved_bytes(hi) <= budget {
            return hi;
        }
        // reserved_bytes grows with capacity (the index by powers of two): bisect.
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if Self::reserved_bytes(mid) <= budget {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The most stacks this store holds (ids beyond go to [`STORE_FULL`]).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of the store's own mappings, in the order `new` makes them: entries, index,
    /// frame arena, shared counters, exclusive stripe pointers.
    fn mapping_sizes(capacity: usize, index_len: usize, arena_cap: usize) -> [usize; 5] {
        [
            capacity * core::mem::size_of::<Entry>(),
            index_len * 4,
            arena_cap * 8,
            capacity * core::mem::size_of::<Counters>(),
            STRIPES * core::mem::size_of::<AtomicPtr<Counters>>(),
        ]
    }

    /// Unmaps the non-null parts (mappings from `map_own` of the matching sizes).
    fn unmap_parts(parts: &[*mut u8; 5], sizes: &[usize; 5]) {
        for (&p, &len) in parts.iter().zip(sizes.iter()) {
            if !p.is_null() {
                sys::unmap_own(p, len);
            }
        }
    }

    #[inline(always)]
    pub fn entry(&self, id: u32) -> &Entry {
        debug_assert!((id as usize) < self.capacity);
        // SAFETY: ids handed out are < capacity (0 and 1 are valid reserved entries), and the
        // entries mapping has `capacity` zero-initialised entries.
        unsafe { &*self.entries.add(id as usize) }
    }

    /// Where the calling thread counts for stack `id` in stripe `stripe` (below STRIPES;
    /// larger values wrap). An exclusive stripe is only ever passed by its owner (or one
    /// thread at a time), which maps the stripe's counters here the first time; if that fails
    /// (no memory), or `id` is past the exclusive ids, the count goes to the shared stripe.
    #[inline(always)]
    pub fn counters(&self, id: u32, stripe: u32) -> Bump<'_> {
        let stripe = stripe as usize % STRIPES;
        let id = id as usize;
        debug_assert!(id < self.capacity);
        if stripe != 0 && id < EXCLUSIVE_IDS {
            let first = self.exclusive_counters(stripe as u32);
            if !first.is_null() {
                // SAFETY: a stripe's counters are a mapping of EXCLUSIVE_IDS zeroed counters,
                // never unmapped, only touched through atomics; id < EXCLUSIVE_IDS.
                let counters = unsafe { &*first.add(id) };
                return Bump {
                    counters,
                    exclusive: true,
                };
            }
        }
        // SAFETY: id < capacity, and the shared stripe has `capacity` zeroed counters, only
        // touched through atomics.
        let counters = unsafe { &*self.shared.add(id) };
        Bump {
            counters,
            exclusive: false,
        }
    }

    /// As `counters`, for a thread that keeps its stripe's counters at hand (`first`, null
    /// when it has none yet): the exclusive ids are then counted without a look at the
    /// stripe table (its load, and the arithmetic to find the entry, cost a tcache pair
    /// 2.4 ns with 1 thread).
    ///
    /// # Safety
    /// `first` is null or `exclusive_counters(stripe)` of the caller's own stripe.
    #[inline(always)]
    pub unsafe fn counters_from(&self, id: u32, stripe: u32, first: *mut Counters) -> Bump<'_> {
        if (id as usize) < EXCLUSIVE_IDS && !first.is_null() {
            // SAFETY: `first` is the caller's stripe's counters (forwarded contract):
            // EXCLUSIVE_IDS zeroed counters, never unmapped, only touched through atomics.
            let counters = unsafe { &*first.add(id as usize) };
            return Bump {
                counters,
                exclusive: true,
            };
        }
        self.counters(id, stripe)
    }

    /// The pointer to exclusive stripe `stripe`'s counters (`stripe` below STRIPES).
    #[inline(always)]
    fn exclusive_slot(&self, stripe: usize) -> Option<&AtomicPtr<Counters>> {
        if stripe >= STRIPES {
            return None;
        }
        // SAFETY: the table holds STRIPES zero-initialised (null) pointers, only touched
        // through atomics; stripe < STRIPES.
        Some(unsafe { &*self.exclusive.add(stripe) })
    }

    /// The counters of exclusive stripe `stripe`, mapped now if need be (by its owner: the
    /// only caller); null for the shared stripe or when out of memory.
    pub fn exclusive_counters(&self, stripe: u32) -> *mut Counters {
        let stripe = stripe as usize % STRIPES;
        let Some(slot) = self.exclusive_slot(stripe).filter(|_| stripe != 0) else {
            return core::ptr::null_mut();
        };
        let counters = slot.load(Ordering::Relaxed);
        if counters.is_null() {
            Self::map_exclusive(slot)
        } else {
            counters
        }
    }

    /// Maps a stripe's counters for its owner (null when out of memory). Only the owner maps,
    /// but a compare-and-swap costs nothing here and keeps one mapping even if two callers
    /// broke that contract.
    #[cold]
    #[inline(never)]
    fn map_exclusive(slot: &AtomicPtr<Counters>) -> *mut Counters {
        let bytes = EXCLUSIVE_IDS * core::mem::size_of::<Counters>();
        let counters = sys::map_own(bytes) as *mut Counters;
        if counters.is_null() {
            return counters;
        }
        // Release: the dumper reads the counters through this pointer.
        match slot.compare_exchange(
            core::ptr::null_mut(),
            counters,
            Ordering::Release,
            Ordering::Acquire,
        ) {
            Ok(_) => counters,
            Err(theirs) => {
                sys::unmap_own(counters as *mut u8, bytes);
                theirs
            }
        }
    }

    /// The mapped counters of exclusive stripe `stripe`, if any.
    fn mapped_exclusive(&self, stripe: usize) -> Option<&[Counters; EXCLUSIVE_IDS]> {
        let p = self.exclusive_slot(stripe)?.load(Ordering::Acquire);
        // SAFETY: a non-null pointer is a mapping of EXCLUSIVE_IDS counters, published with
        // Release after it was mapped (zeroed), and not unmapped while the store lives.
        unsafe { (p as *const [Counters; EXCLUSIVE_IDS]).as_ref() }
    }

    /// Counters of stack `id` summed over the stripes.
    pub fn totals(&self, id: u32) -> Totals {
        let mut sums = [[0u64; 4]; 1];
        let id = id as usize;
        self.sum_range(id, &mut sums);
        let [allocs, frees, alloc_bytes, free_bytes] = sums[0];
        Totals {
            allocs,
            frees,
            alloc_bytes,
            free_bytes,
        }
    }

    /// Every stack's counters summed over the stripes, for ids `first..first + out.len()`:
    /// `out[id - first]` gets [allocs, frees, alloc bytes, free bytes] added (wrapping, as the
    /// counters are). One pass over each stripe's counters, not a visit of every stripe per id.
    pub fn sum_range(&self, first: usize, out: &mut [[u64; 4]]) {
        let end = (first + out.len()).min(self.capacity);
        for id in first..end {
            if let Some(sum) = out.get_mut(id - first) {
                // SAFETY: id < capacity, inside the shared stripe's mapping.
                add_counters(sum, unsafe { &*self.shared.add(id) });
            }
        }
        let exclusive_end = end.min(EXCLUSIVE_IDS);
        for stripe in 1..STRIPES {
            let Some(counters) = self.mapped_exclusive(stripe) else {
                continue;
            };
            for id in first..exclusive_end {
                if let (Some(sum), Some(c)) = (out.get_mut(id - first), counters.get(id)) {
                    add_counters(sum, c);
                }
            }
        }
    }

    /// Counters in the exclusive stripes' mappings for the ids in use.
    fn exclusive_counters_in_use(&self) -> usize {
        let ids = (self.id_limit() as usize).min(EXCLUSIVE_IDS);
        let mapped = (1..STRIPES)
            .filter(|&s| self.mapped_exclusive(s).is_some())
            .count();
        mapped * ids
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
    /// (An exclusive stripe counts the ids in use below EXCLUSIVE_IDS, once mapped.)
    pub fn bytes_used(&self) -> usize {
        self.id_limit() as usize
            * (core::mem::size_of::<Entry>() + core::mem::size_of::<Counters>())
            + self.exclusive_counters_in_use() * core::mem::size_of::<Counters>()
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
