//! Live malloc-family blocks: a sharded open-addressing hash table in our own mappings.
//!
//! Each shard is a linear-probing table behind its own spin lock, so threads allocating in
//! parallel almost never meet; deletion shifts entries back instead of leaving tombstones, so
//! a long-running service does not degrade. A record is packed into 24 bytes (user-space
//! addresses and sizes fit in 48 bits); shards run up to 7/8 full and grow by half, so a live
//! allocation costs between 27 and 41 bytes of table (see BENCHMARKS.md for the measured
//! figure). Growing a shard rehashes only that shard.

use super::Birth;
use crate::sync::SpinLock;
use crate::sys::{self, prefetch};
use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

/// Shards come in groups: the group is chosen by the 64 MiB window the address lies in (a
/// glibc thread arena's heap is one 64 MiB-aligned window, so a thread allocating from its
/// own arena touches only its own group's shards and lock lines: nothing moves between cores
/// in the common case), the shard within the group by the address's hash (so one big heap
/// still spreads over many small shards, and a snapshot holds each lock briefly). A block
/// freed by another thread finds its record the same way: the shard depends on the address
/// only.
///
/// ```text
///   shard index  =  group (6 bits: hash of addr >> 26)  |  sub-shard (6 bits: top of hash(addr))
///   home slot    =  the next bits of hash(addr), scaled to the shard's capacity
/// ```
pub const GROUP_BITS: u32 = 6;
pub const SUB_BITS: u32 = 6;
pub const SHARD_BITS: u32 = GROUP_BITS + SUB_BITS;
pub const SHARDS: usize = 1 << SHARD_BITS;
/// The window an arena heap occupies (glibc's HEAP_MAX_SIZE on 64-bit).
const WINDOW_SHIFT: u32 = 26;
/// One page of records (a slot array is a mapping of its own, so a smaller one would cost
/// the page anyway): with 4,096 shards, a process whose blocks are spread thin over many
/// arenas pays 4 KiB per shard it touches, at most 16 MiB, and the pages it maps are the
/// pages it uses. Shards grow by half as they fill.
const INITIAL_CAPACITY: usize = sys::PAGE / core::mem::size_of::<Record>();
const LOW48: u64 = (1 << 48) - 1;

/// One live block, unpacked.
#[derive(Clone, Copy, Default, Debug)]
pub struct Slot {
    pub addr: u64,
    pub size: u64,
    pub stack: u32,
    pub generation: u16,
    pub epoch: u8,
    pub flags: u8,
    pub birth_ms: u32,
}

pub const FLAG_SAMPLED: u8 = 1;

/// What `insert` did.
pub enum Inserted {
    New,
    /// A record for the same address was still there (a block released behind our back).
    Replaced(Slot),
    /// Our own table could not grow (the process is out of memory); the block is untracked.
    Lost,
}

/// One live block as the table stores it: 24 bytes.
///
/// ```text
///   word 0:  [ addr (48 bits)  | generation (16) ]
///   word 1:  [ size (48 bits)  | epoch (8) | flags (8) ]
///   word 2:  [ stack id (32)   | birth ms (32) ]
/// ```
///
/// User-space addresses and sizes fit in 48 bits; an all-zero first word marks an empty slot
/// (no live block has address 0). Snapshots copy these words as they are and decode later.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
#[repr(C)]
pub struct Record(pub [u64; 3]);

impl Record {
    /// The bits of an address a record keeps.
    pub const ADDR_MASK: u64 = LOW48;

    #[inline(always)]
    pub fn addr(&self) -> u64 {
        self.0[0] & LOW48
    }
    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
    #[inline(always)]
    pub fn generation(&self) -> u16 {
        (self.0[0] >> 48) as u16
    }
    #[inline(always)]
    pub fn size(&self) -> u64 {
        self.0[1] & LOW48
    }
    #[inline(always)]
    pub fn epoch(&self) -> u8 {
        (self.0[1] >> 48) as u8
    }
    #[inline(always)]
    pub fn flags(&self) -> u8 {
        (self.0[1] >> 56) as u8
    }
    #[inline(always)]
    pub fn stack(&self) -> u32 {
        self.0[2] as u32
    }
    #[inline(always)]
    pub fn birth_ms(&self) -> u32 {
        (self.0[2] >> 32) as u32
    }
    #[inline(always)]
    pub fn pack(s: &Slot) -> Record {
        Record([
            (s.addr & LOW48) | (s.generation as u64) << 48,
            (s.size.min(LOW48)) | (s.epoch as u64) << 48 | (s.flags as u64) << 56,
            s.stack as u64 | (s.birth_ms as u64) << 32,
        ])
    }
    #[inline(always)]
    pub fn unpack(&self) -> Slot {
        Slot {
            addr: self.addr(),
            generation: self.generation(),
            size: self.size(),
            epoch: self.epoch(),
            flags: self.flags(),
            stack: self.stack(),
            birth_ms: self.birth_ms(),
        }
    }
}

struct Shard {
    slots: *mut Record,
    capacity: usize,
    len: usize,
    /// The slot array is `MADV_WIPEONFORK`: a forked child finds it all empty.
    wiped_in_child: bool,
}

// SAFETY: the slot array is only touched under the shard's lock.
unsafe impl Send for Shard {}

/// A shard's lock and, in the same line, where its slot array was last put (`Hint`).
#[repr(align(64))]
struct PaddedShard(SpinLock<Shard>, Hint);

/// A copy of a shard's slot array address and capacity that may be read without the lock:
/// `prefetch_home` starts loading a record's home slot from it. Written under the lock when
/// the shard grows; a reader may see it stale (a line prefetched in vain, or in an array
/// since unmapped, which a prefetch never faults on).
struct Hint {
    slots: AtomicPtr<Record>,
    capacity: AtomicUsize,
}

/// Writes one empty record per page of the room after `out`'s end, outside the shard's lock:
/// the memcpy under it would otherwise take a page fault for every fresh page of the copy
/// (at 10M live blocks, hundreds per shard, the bulk of the hold).
fn prefault(out: &mut Vec<Record>, room: usize) {
    const PER_PAGE: usize = sys::PAGE / core::mem::size_of::<Record>();
    let spare = out.spare_capacity_mut();
    let room = room.min(spare.len());
    for slot in spare.iter_mut().take(room).step_by(PER_PAGE) {
        slot.write(Record::default());
    }
}

pub struct LiveTable {
    /// Which of the sub-shard bits choose a shard (all of them, or none: see
    /// `with_one_shard_per_group`). Read by every insert and remove, written never: a line
    /// of its own that stays shared in every cache (the shards are 64-byte aligned).
    sub_mask: usize,
    shards: [PaddedShard; SHARDS],
    /// One bit per shard in use, and the slots of all shards, so that dumps and a forked child
    /// visit only the shards in use: taking every shard's lock to ask wrote all 64 pages of
    /// shards in a process that uses a few (a shell's `$(…)` child). Invariant: a shard whose
    /// lock anyone holds has its bit set. An insert sets it (a full barrier) before it takes a
    /// lock whose shard has no slot array yet; a remove does not lock such a shard (it holds
    /// nothing to remove); dumps lock only shards whose bit is set.
    in_use: [AtomicU64; SHARDS / 64],
    slots_in_all: AtomicUsize,
}

#[inline(always)]
fn hash(addr: u64) -> u64 {
    (addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Home slot of a hash in a table of `capacity` slots (any capacity, no power of two needed):
/// from the bits below the ones that chose the sub-shard.
#[inline(always)]
fn home(h: u64, capacity: usize) -> usize {
    (((h << SUB_BITS) as u128 * capacity as u128) >> 64) as usize
}

/// The shard of `addr` (whose hash is `h`), with only the sub-shard bits in `sub_mask`.
#[inline(always)]
fn shard_index(addr: u64, h: u64, sub_mask: usize) -> usize {
    let group =
        ((addr >> WINDOW_SHIFT).wrapping_mul(0xD6E8_FEB8_6659_FD93) >> (64 - GROUP_BITS)) as usize;
    let sub = (h >> (64 - SUB_BITS)) as usize & sub_mask;
    (group << SUB_BITS) | sub
}

impl LiveTable {
    /// A table whose blocks spread over every shard of their group (full tracking).
    pub const fn new() -> Self {
        Self::with_sub_mask((1 << SUB_BITS) - 1)
    }

    /// A table with one shard per group, for sampling: its records are few (one per
    /// sampling distance of live bytes), so 64 sub-shards a group spread them one or two to a
    /// slot array and every sample went to a page of its own (a mapping, a page fault and a
    /// `MADV_WIPEONFORK` each on first use: 128 of them in a 2-thread run of the tcache
    /// workload, and up to 16 MiB of slot pages in a process with many arenas). A shard
    /// still grows as it fills, by half, under its own lock.
    pub const fn with_one_shard_per_group() -> Self {
        Self::with_sub_mask(0)
    }

    /// Makes the zeroed memory at `table` a table like [`LiveTable::new`] (or, with
    /// `one_shard_per_group`, like [`LiveTable::with_one_shard_per_group`]) by writing only its
    /// shard mask. The shards' 256 KiB stay untouched, so unbacked until a shard is first used:
    /// a process that lives briefly (a shell's `$(…)` child) never faults them in.
    ///
    /// # Safety
    /// `table` is valid for writes of a `LiveTable`, aligned, and every byte of it is zero.
    pub unsafe fn init_zeroed(table: *mut LiveTable, one_shard_per_group: bool) {
        let sub_mask = if one_shard_per_group {
            0
        } else {
            (1 << SUB_BITS) - 1
        };
        // SAFETY: the caller's memory is zeroed, and an empty shard (`EMPTY` in
        // `with_sub_mask`) is all zero: an unlocked lock (0), no slot array (null), capacity,
        // length and hint 0, not wiped (false); so are `in_use` and `slots_in_all`. So only
        // the mask differs from a built table.
        unsafe { core::ptr::addr_of_mut!((*table).sub_mask).write(sub_mask) };
    }

    const fn with_sub_mask(sub_mask: usize) -> Self {
        // Every field zero: `init_zeroed` relies on it.
        #[allow(clippy::declare_interior_mutable_const)]
        const EMPTY: PaddedShard = PaddedShard(
            SpinLock::new(Shard {
                slots: core::ptr::null_mut(),
                capacity: 0,
                len: 0,
                wiped_in_child: false,
            }),
            Hint {
                slots: AtomicPtr::new(core::ptr::null_mut()),
                capacity: AtomicUsize::new(0),
            },
        );
        #[allow(clippy::declare_interior_mutable_const)]
        const NONE_IN_USE: AtomicU64 = AtomicU64::new(0);
        LiveTable {
            sub_mask,
            shards: [EMPTY; SHARDS],
            in_use: [NONE_IN_USE; SHARDS / 64],
            slots_in_all: AtomicUsize::new(0),
        }
    }

    #[inline(always)]
    fn padded(&self, addr: u64, h: u64) -> Option<&PaddedShard> {
        self.shards.get(shard_index(addr, h, self.sub_mask))
    }

    /// Starts loading the lines `insert(addr, …)` will touch first, the shard's lock line and
    /// the record's home slot, so that work done in between (the stack walk) hides their
    /// misses. Under full tracking on librocksdb and with sampling on workload 1, the load of
    /// the home slot was most of the tracked malloc's own time: the program's own data had
    /// evicted it since the last insert.
    #[inline(always)]
    pub fn prefetch_home(&self, addr: u64) {
        let h = hash(addr);
        let Some(s) = self.padded(addr, h) else {
            return;
        };
        prefetch(s as *const PaddedShard as *const u8);
        let capacity = s.1.capacity.load(Ordering::Relaxed);
        if capacity != 0 {
            let slots = s.1.slots.load(Ordering::Relaxed);
            prefetch(slots.wrapping_add(home(h, capacity)) as *const u8);
        }
    }

    /// Record a block.
    #[inline(always)]
    pub fn insert(&self, addr: u64, size: u64, birth: Birth) -> Inserted {
        let h = hash(addr);
        let Some(padded) = self.padded(addr, h) else {
            return Inserted::Lost;
        };
        if padded.1.capacity.load(Ordering::Relaxed) == 0 {
            self.mark_in_use(padded);
        }
        let Some(mut shard) = padded.0.lock_or_give_up() else {
            return Inserted::Lost;
        };
        if (shard.len + 1) * 8 > shard.capacity * 7 {
            let before = shard.capacity;
            if !shard.grow() {
                return Inserted::Lost; // no memory for our own table: lose the record, never the block
            }
            padded.1.slots.store(shard.slots, Ordering::Relaxed);
            padded.1.capacity.store(shard.capacity, Ordering::Relaxed);
            self.slots_in_all
                .fetch_add(shard.capacity - before, Ordering::Relaxed);
        }
        let record = Record::pack(&Slot {
            addr,
            size,
            stack: birth.stack,
            generation: birth.generation,
            epoch: birth.epoch,
            flags: if birth.sampled { FLAG_SAMPLED } else { 0 },
            birth_ms: birth.ms,
        });
        let cap = shard.capacity;
        let mut i = home(h, cap);
        loop {
            // SAFETY: i < capacity and slots has capacity entries.
            let slot = unsafe { &mut *shard.slots.add(i) };
            if slot.is_empty() {
                *slot = record;
                shard.len += 1;
                return Inserted::New;
            }
            if slot.addr() == addr & LOW48 {
                let old = slot.unpack();
                *slot = record;
                return Inserted::Replaced(old);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    /// A shard is about to be locked for its first insert: it is in use from now on. SeqCst:
    /// the bit is in memory before the lock is taken, so a fork that copies the held lock
    /// copies the bit too.
    #[cold]
    fn mark_in_use(&self, padded: &PaddedShard) {
        let index = (padded as *const PaddedShard as usize - self.shards.as_ptr() as usize)
            / core::mem::size_of::<PaddedShard>();
        if let Some(word) = self.in_use.get(index / 64) {
            word.fetch_or(1 << (index % 64), Ordering::SeqCst);
        }
    }

    /// Whether shard `index` is in use (see `in_use`).
    fn in_use(&self, index: usize) -> bool {
        self.in_use
            .get(index / 64)
            .is_some_and(|w| w.load(Ordering::Acquire) & (1 << (index % 64)) != 0)
    }

    /// The shards in use, in index order.
    fn shards_in_use(&self) -> impl Iterator<Item = &PaddedShard> {
        (0..SHARDS)
            .filter(|&i| self.in_use(i))
            .filter_map(|i| self.shards.get(i))
    }

    /// Remove a block's record, returning it.
    #[inline(always)]
    pub fn remove(&self, addr: u64) -> Option<Slot> {
        let h = hash(addr);
        let padded = self.padded(addr, h)?;
        // No slot array yet: nothing to remove, and no lock taken (see `in_use`). The block
        // was recorded (if at all) before its pointer reached this thread, so the growth that
        // made room for it is visible here.
        if padded.1.capacity.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let mut shard = padded.0.lock_or_give_up()?;
        if shard.len == 0 {
            return None;
        }
        let i = shard.find(h, addr)?;
        // SAFETY: find returns an index < capacity.
        let slot = unsafe { (*shard.slots.add(i)).unpack() };
        shard.delete_at(i);
        Some(slot)
    }

    /// Append shard `index`'s records to `out`; returns how long its lock was held (ns).
    /// Under the lock only a flat memcpy of the slot array happens (room is reserved
    /// beforehand, outside the lock), so an allocating thread waits at most that long; empty
    /// slots are squeezed out after the lock is released.
    pub fn copy_shard(&self, index: usize, out: &mut Vec<Record>) -> u64 {
        let Some(shard) = self.shards.get(index) else {
            return 0;
        };
        if !self.in_use(index) {
            return 0;
        }
        let start = out.len();
        loop {
            let capacity = shard.0.lock().capacity;
            if capacity == 0 {
                // Never used: most of the 4,096 in a small process (the reservation, the
                // prefault and two clock reads per shard were a tenth of /bin/true's exit dump).
                return 0;
            }
            out.reserve(capacity);
            prefault(out, capacity);
            let t0 = sys::monotonic_ns();
            let s = shard.0.lock();
            if s.capacity > out.capacity() - start {
                continue; // grew in between: reserve again
            }
            // SAFETY: `out` has room for `capacity` more records (checked above) and the slot
            // array holds exactly that many; both are arrays of the same 24-byte type.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    s.slots as *const Record,
                    out.as_mut_ptr().add(start),
                    s.capacity,
                );
                out.set_len(start + s.capacity);
            }
            drop(s);
            let held = sys::monotonic_ns().saturating_sub(t0);
            let mut kept = start;
            for i in start..out.len() {
                let Some(&r) = out.get(i) else { break };
                if !r.is_empty() {
                    if let Some(slot) = out.get_mut(kept) {
                        *slot = r;
                    }
                    kept += 1;
                }
            }
            out.truncate(kept);
            return held;
        }
    }

    /// Slots in all shards together: room for a snapshot copied shard by shard without
    /// reallocating (which would hold the old and the new copy at once).
    pub fn total_capacity(&self) -> usize {
        self.slots_in_all.load(Ordering::Relaxed)
    }

    /// (bytes of table memory, live records).
    pub fn footprint(&self) -> (usize, usize) {
        let records = self.shards_in_use().map(|s| s.0.lock().len).sum();
        (
            self.total_capacity() * core::mem::size_of::<Record>(),
            records,
        )
    }

    /// In a forked child: shards a thread of the parent was changing at the fork are emptied
    /// (their records forgotten, their memory left alone: it may be half-updated); returns how
    /// many. Every other shard is as its last holder left it. Only the shards in use are
    /// looked at: no other shard's lock can be held (see `in_use`). An emptied shard's slots
    /// stay counted in `slots_in_all` (its array stays mapped, left alone).
    ///
    /// The table takes no part in the fork itself, unlike our other locks: taking and releasing
    /// 4,096 shard locks around every fork wrote 64 pages that fork had just made copy-on-write,
    /// in the parent and again in the child (a shell's subshell paid more for that than for
    /// everything else of ours). A child thus loses, rarely, the inherited records of a shard
    /// in flight: their frees in the child are then not found, which is harmless, and the
    /// parent still accounts for them.
    ///
    /// # Safety
    /// Only in a forked child that has a single thread, before anything else uses the table.
    pub unsafe fn after_fork_in_child(&self) -> usize {
        let mut emptied = 0;
        for s in self.shards_in_use() {
            if s.0.is_locked() {
                // SAFETY: forwarded contract: no other thread exists to use the shard.
                unsafe {
                    s.0.replace_forgetting(Shard {
                        slots: core::ptr::null_mut(),
                        capacity: 0,
                        len: 0,
                        wiped_in_child: false,
                    })
                };
                emptied += 1;
                continue;
            }
            // SAFETY: forwarded contract; the lock is free (checked above).
            let shard = unsafe { s.0.unlocked_in_child() };
            // Written only where there is something to forget: a write copies the page.
            if shard.wiped_in_child && shard.len != 0 {
                shard.len = 0;
            }
        }
        emptied
    }
}

impl Shard {
    fn find(&self, h: u64, addr: u64) -> Option<usize> {
        let cap = self.capacity;
        let mut i = home(h, cap);
        loop {
            // SAFETY: i < capacity.
            let p = unsafe { &*self.slots.add(i) };
            if p.is_empty() {
                return None;
            }
            if p.addr() == addr & LOW48 {
                return Some(i);
            }
            i += 1;
            if i == cap {
                i = 0;
            }
        }
    }

    fn grow(&mut self) -> bool {
        let new_capacity = if self.capacity == 0 {
            INITIAL_CAPACITY
        } else {
            self.capacity + self.capacity / 2
        };
        let bytes = new_capacity * core::mem::size_of::<Record>();
        let (fresh, wiped) = sys::map_own_wiped_in_child(bytes);
        let fresh = fresh as *mut Record;
        if fresh.is_null() {
            return self.capacity != 0 && (self.len + 1) < self.capacity;
        }
        for i in 0..self.capacity {
            // SAFETY: i < old capacity.
            let p = unsafe { *self.slots.add(i) };
            if p.is_empty() {
                continue;
            }
            let mut j = home(hash(p.addr()), new_capacity);
            // SAFETY: j < new capacity; the fresh mapping is zeroed (all empty).
            unsafe {
                while !(*fresh.add(j)).is_empty() {
                    j += 1;
                    if j == new_capacity {
                        j = 0;
                    }
                }
                *fresh.add(j) = p;
            }
        }
        if !self.slots.is_null() {
            sys::unmap_own(
                self.slots as *mut u8,
                self.capacity * core::mem::size_of::<Record>(),
            );
        }
        self.slots = fresh;
        self.capacity = new_capacity;
        self.wiped_in_child = wiped;
        true
    }

    /// Backward-shift deletion: keeps every probe chain intact without tombstones.
    fn delete_at(&mut self, mut hole: usize) {
        let cap = self.capacity;
        let mut i = hole;
        loop {
            i += 1;
            if i == cap {
                i = 0;
            }
            // SAFETY: i < capacity.
            let p = unsafe { *self.slots.add(i) };
            if p.is_empty() {
                break;
            }
            let h = home(hash(p.addr()), cap);
            // Move the entry into the hole unless its home lies cyclically in (hole, i].
            let stays = if hole <= i {
                hole < h && h <= i
            } else {
                hole < h || h <= i
            };
            if !stays {
                // SAFETY: hole and i < capacity.
                unsafe { *self.slots.add(hole) = p };
                hole = i;
            }
        }
        // SAFETY: hole < capacity.
        unsafe { *self.slots.add(hole) = Record([0; 3]) };
        self.len -= 1;
    }
}

#[cfg(test)]
mod tests;
