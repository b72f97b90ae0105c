//! Live malloc-family blocks: a sharded open-addressing hash table in our own mappings.
//!
//! Each shard is a linear-probing table behind its own spin lock, so threads allocating in
//! parallel almost never meet; deletion shifts entries back instead of leaving tombstones, so
//! a long-running service does not degrade. A slot is 32 bytes and tables stay at most 3/4
//! full, about 43 bytes per live allocation. Growing a shard rehashes only that shard.

use super::Birth;
use crate::sync::SpinLock;
use crate::sys;

pub const SHARD_BITS: u32 = 7;
pub const SHARDS: usize = 1 << SHARD_BITS;
const INITIAL_CAPACITY: usize = 512;

#[derive(Clone, Copy, Default)]
#[repr(C)]
pub struct Slot {
    /// Block address; 0 marks an empty slot (malloc never returns 0 for a live block).
    pub addr: u64,
    pub size: u64,
    pub stack: u32,
    pub generation: u16,
    pub epoch: u8,
    pub flags: u8,
    pub birth_ms: u32,
    _pad: u32,
}

pub const FLAG_SAMPLED: u8 = 1;

struct Shard {
    slots: *mut Slot,
    capacity: usize,
    len: usize,
}

// SAFETY: the slot array is only touched under the shard's lock.
unsafe impl Send for Shard {}

#[repr(align(64))]
struct PaddedShard(SpinLock<Shard>);

pub struct LiveTable {
    shards: [PaddedShard; SHARDS],
}

#[inline(always)]
fn hash(addr: u64) -> u64 {
    (addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl LiveTable {
    pub const fn new() -> Self {
        #[allow(clippy::declare_interior_mutable_const)]
        const EMPTY: PaddedShard = PaddedShard(SpinLock::new(Shard {
            slots: core::ptr::null_mut(),
            capacity: 0,
            len: 0,
        }));
        LiveTable {
            shards: [EMPTY; SHARDS],
        }
    }

    #[inline(always)]
    fn shard_of(h: u64) -> usize {
        (h >> (64 - SHARD_BITS)) as usize
    }

    /// Record a block. Returns the size of a record that was overwritten (a block whose free
    /// we never saw), so counters can be corrected.
    #[inline]
    pub fn insert(&self, addr: u64, size: u64, birth: Birth) -> Option<Slot> {
        let h = hash(addr);
        let mut shard = self.shards[Self::shard_of(h)].0.lock();
        if (shard.len + 1) * 4 > shard.capacity * 3 && !shard.grow() {
            return None; // out of memory for our own table: lose the record, never the block
        }
        let mask = shard.capacity - 1;
        let mut i = (h << SHARD_BITS >> 20) as usize & mask;
        loop {
            // SAFETY: i < capacity and slots has capacity entries.
            let slot = unsafe { &mut *shard.slots.add(i) };
            if slot.addr == 0 || slot.addr == addr {
                let old = if slot.addr == addr { Some(*slot) } else { None };
                if old.is_none() {
                    shard.len += 1;
                }
                *slot = Slot {
                    addr,
                    size,
                    stack: birth.stack,
                    generation: birth.generation,
                    epoch: birth.epoch,
                    flags: if birth.sampled { FLAG_SAMPLED } else { 0 },
                    birth_ms: birth.ms,
                    _pad: 0,
                };
                return old;
            }
            i = (i + 1) & mask;
        }
    }

    /// Remove a block's record, returning it.
    #[inline]
    pub fn remove(&self, addr: u64) -> Option<Slot> {
        let h = hash(addr);
        let mut shard = self.shards[Self::shard_of(h)].0.lock();
        if shard.len == 0 {
            return None;
        }
        let mask = shard.capacity - 1;
        let mut i = (h << SHARD_BITS >> 20) as usize & mask;
        loop {
            // SAFETY: i < capacity.
            let slot = unsafe { *shard.slots.add(i) };
            if slot.addr == 0 {
                return None;
            }
            if slot.addr == addr {
                shard.delete_at(i);
                return Some(slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Copy shard `index` into `out` under its lock; the lock is held for one shard only, so an
    /// allocating thread waits at most one shard's copy.
    pub fn copy_shard(&self, index: usize, out: &mut Vec<Slot>) {
        let shard = self.shards[index].0.lock();
        out.reserve(shard.len);
        for i in 0..shard.capacity {
            // SAFETY: i < capacity.
            let slot = unsafe { *shard.slots.add(i) };
            if slot.addr != 0 {
                out.push(slot);
            }
        }
    }

    /// Look a block up without removing it.
    pub fn contains(&self, addr: u64) -> bool {
        let h = hash(addr);
        let shard = self.shards[Self::shard_of(h)].0.lock();
        if shard.len == 0 {
            return false;
        }
        let mask = shard.capacity - 1;
        let mut i = (h << SHARD_BITS >> 20) as usize & mask;
        loop {
            // SAFETY: i < capacity.
            let a = unsafe { (*shard.slots.add(i)).addr };
            if a == 0 {
                return false;
            }
            if a == addr {
                return true;
            }
            i = (i + 1) & mask;
        }
    }

    /// Bytes of our own memory the table occupies.
    pub fn footprint(&self) -> (usize, usize) {
        let mut bytes = 0;
        let mut records = 0;
        for s in &self.shards {
            let s = s.0.lock();
            bytes += s.capacity * core::mem::size_of::<Slot>();
            records += s.len;
        }
        (bytes, records)
    }

    pub fn fork_prepare(&self) {
        for s in &self.shards {
            s.0.lock_forever();
        }
    }

    /// # Safety
    /// Pairs with `fork_prepare`.
    pub unsafe fn fork_release(&self) {
        for s in &self.shards {
            // SAFETY: forwarded contract.
            unsafe { s.0.force_unlock() };
        }
    }
}

impl Shard {
    fn grow(&mut self) -> bool {
        let new_capacity = if self.capacity == 0 {
            INITIAL_CAPACITY
        } else {
            self.capacity * 2
        };
        let bytes = new_capacity * core::mem::size_of::<Slot>();
        let fresh = sys::map_own(bytes) as *mut Slot;
        if fresh.is_null() {
            return self.capacity != 0 && (self.len + 1) < self.capacity;
        }
        let mask = new_capacity - 1;
        for i in 0..self.capacity {
            // SAFETY: i < old capacity.
            let slot = unsafe { *self.slots.add(i) };
            if slot.addr == 0 {
                continue;
            }
            let mut j = (hash(slot.addr) << SHARD_BITS >> 20) as usize & mask;
            // SAFETY: j < new capacity; the fresh mapping is zeroed (all empty).
            unsafe {
                while (*fresh.add(j)).addr != 0 {
                    j = (j + 1) & mask;
                }
                *fresh.add(j) = slot;
            }
        }
        if !self.slots.is_null() {
            sys::unmap_own(
                self.slots as *mut u8,
                self.capacity * core::mem::size_of::<Slot>(),
            );
        }
        self.slots = fresh;
        self.capacity = new_capacity;
        true
    }

    /// Backward-shift deletion: keeps every probe chain intact without tombstones.
    fn delete_at(&mut self, mut hole: usize) {
        let mask = self.capacity - 1;
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            // SAFETY: i < capacity.
            let slot = unsafe { *self.slots.add(i) };
            if slot.addr == 0 {
                break;
            }
            let home = (hash(slot.addr) << SHARD_BITS >> 20) as usize & mask;
            // Move the entry into the hole if its home is not cyclically in (hole, i].
            let in_range = if hole <= i {
                hole < home && home <= i
            } else {
                hole < home || home <= i
            };
            if !in_range {
                // SAFETY: hole and i < capacity.
                unsafe { *self.slots.add(hole) = slot };
                hole = i;
            }
        }
        // SAFETY: hole < capacity.
        unsafe { (*self.slots.add(hole)).addr = 0 };
        self.len -= 1;
    }
}
