//! The library's own allocator: every Rust allocation inside liboffheap (unwinder tables,
//! interval map, dump buffers) comes from here, out of mappings named `[anon:offheap]`.
//!
//! Going through the host's malloc would re-enter our hooks, count our memory as the host's,
//! and deadlock in fork windows; so this is the `#[global_allocator]` of the cdylib. It is a
//! plain segregated-fit allocator: power-of-two classes up to 64 KiB served from 1 MiB chunks,
//! larger blocks mapped directly. It is only used off the hot path (the dumper, module
//! discovery, first use of a thread), so one lock is enough.

use crate::sync::SpinLock;
use crate::sys;
use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicUsize, Ordering};

const MIN_CLASS_SHIFT: usize = 4; // 16 bytes
const MAX_CLASS_SHIFT: usize = 16; // 64 KiB
const CLASSES: usize = MAX_CLASS_SHIFT - MIN_CLASS_SHIFT + 1;
const CHUNK: usize = 1 << 20;

struct Pools {
    free: [*mut FreeBlock; CLASSES],
    bump: *mut u8,
    bump_end: *mut u8,
}

struct FreeBlock {
    next: *mut FreeBlock,
}

// SAFETY: the raw pointers are only touched under the SpinLock.
unsafe impl Send for Pools {}

pub struct OwnAllocator {
    pools: SpinLock<Pools>,
    /// Bytes handed out and not yet returned, and the most there were since `reset_peak`:
    /// what a dump costs in memory is measured with these.
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl OwnAllocator {
    pub const fn new() -> Self {
        OwnAllocator {
            pools: SpinLock::new(Pools {
                free: [core::ptr::null_mut(); CLASSES],
                bump: core::ptr::null_mut(),
                bump_end: core::ptr::null_mut(),
            }),
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// Maps the first pool chunk if there is none yet; false if it cannot be mapped. A small
    /// allocation that finds no chunk and cannot map one fails, and Rust's allocation-failure
    /// handler aborts the process: asked first, the library can stay out of the way instead.
    pub fn warm_up(&self) -> bool {
        self.ensure_room(1)
    }

    /// Makes sure the pools can carve `bytes` (at most a chunk) of small blocks without
    /// mapping: a fresh chunk is mapped now if the current one has less left; false if it
    /// cannot be. Asked before code that allocates through APIs that cannot fail (a library's
    /// `Box::new`), so that a refused mapping turns into a clean "no" here instead of Rust's
    /// allocation-failure handler aborting the host later. (Another thread may take the room
    /// meanwhile; a thread's first caches ask for far more than they take.)
    pub fn ensure_room(&self, bytes: usize) -> bool {
        let mut pools = self.pools.lock();
        let left = (pools.bump_end as usize).saturating_sub(pools.bump as usize);
        if !pools.bump.is_null() && left >= bytes.min(CHUNK) {
            return true;
        }
        let chunk = sys::map_own(CHUNK);
        if chunk.is_null() {
            return false;
        }
        pools.bump = chunk;
        // SAFETY: CHUNK bytes were just mapped at `chunk`.
        pools.bump_end = unsafe { chunk.add(CHUNK) };
        true
    }

    /// Bytes currently allocated.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// Start measuring a new high-water mark from the current use.
    pub fn reset_peak(&self) {
        self.peak.store(self.in_use(), Ordering::Relaxed);
    }

    /// Most bytes allocated at once since `reset_peak`.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    fn account_alloc(&self, bytes: usize) {
        let now = self.in_use.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn account_free(&self, bytes: usize) {
        self.in_use.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Hold the allocator across fork so the child never inherits a half-updated free list.
    pub fn fork_prepare(&self) {
        self.pools.lock_forever();
    }

    /// # Safety
    /// Pairs with `fork_prepare` in the parent and in the child.
    pub unsafe fn fork_release(&self) {
        // SAFETY: forwarded contract.
        unsafe { self.pools.force_unlock() };
    }
}

fn class_of(layout: &Layout) -> Option<usize> {
    let need = layout.size().max(layout.align()).max(1 << MIN_CLASS_SHIFT);
    let shift = need.next_power_of_two().trailing_zeros() as usize;
    if shift > MAX_CLASS_SHIFT || layout.align() > sys::PAGE {
        None
    } else {
        Some(shift - MIN_CLASS_SHIFT)
    }
}

// SAFETY: blocks handed out are disjoint, sized and aligned for their layout (class sizes are
// powers of two carved from page-aligned chunks at multiples of their size), and are only
// reused after dealloc returns them.
unsafe impl GlobalAlloc for OwnAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.alloc_block(layout) };
        if !p.is_null() {
            self.account_alloc(block_bytes(&layout));
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        let p = unsafe { self.alloc(layout) };
        // A block above the classes is a fresh mapping, zero already: leaving it unwritten
        // leaves its pages unbacked until used (a thread's walk cache is ~560 KiB).
        if !p.is_null() && class_of(&layout).is_some() {
            // SAFETY: `p` is a block of at least `layout.size()` bytes just handed out.
            unsafe { core::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        self.account_free(block_bytes(&layout));
        // SAFETY: forwarded contract.
        unsafe { self.free_block(ptr, layout) }
    }
}

/// Bytes a block of `layout` really occupies (its class size, or the page-rounded mapping).
fn block_bytes(layout: &Layout) -> usize {
    match class_of(layout) {
        Some(class) => 1usize << (class + MIN_CLASS_SHIFT),
        None => sys::round_up(layout.size(), sys::PAGE),
    }
}

impl OwnAllocator {
    /// # Safety
    /// As for `GlobalAlloc::alloc`.
    unsafe fn alloc_block(&self, layout: Layout) -> *mut u8 {
        let Some(class) = class_of(&layout) else {
            if layout.align() > sys::PAGE {
                return core::ptr::null_mut();
            }
            return sys::map_own(layout.size());
        };
        let size = 1usize << (class + MIN_CLASS_SHIFT);
        let mut pools = self.pools.lock();
        let Some(slot) = pools.free.get_mut(class) else {
            return core::ptr::null_mut();
        };
        let head = *slot;
        if !head.is_null() {
            // SAFETY: free-list entries are blocks we own, written by dealloc.
            *slot = unsafe { (*head).next };
            return head as *mut u8;
        }
        let aligned = sys::round_up(pools.bump as usize, size);
        if pools.bump.is_null() || aligned + size > pools.bump_end as usize {
            let chunk = sys::map_own(CHUNK);
            if chunk.is_null() {
                return core::ptr::null_mut();
            }
            pools.bump = chunk;
            // SAFETY: CHUNK bytes were just mapped at `chunk`.
            pools.bump_end = unsafe { chunk.add(CHUNK) };
            let block = pools.bump;
            // SAFETY: size <= 64 KiB < CHUNK, and chunk is page aligned.
            pools.bump = unsafe { block.add(size) };
            return block;
        }
        let block = aligned as *mut u8;
        pools.bump = (aligned + size) as *mut u8;
        block
    }

    /// # Safety
    /// As for `GlobalAlloc::dealloc`.
    unsafe fn free_block(&self, ptr: *mut u8, layout: Layout) {
        let Some(class) = class_of(&layout) else {
            sys::unmap_own(ptr, layout.size());
            return;
        };
        let mut pools = self.pools.lock();
        let Some(slot) = pools.free.get_mut(class) else {
            return;
        };
        let block = ptr as *mut FreeBlock;
        // SAFETY: the caller returns a block of this class that it no longer uses; it is at
        // least 16 bytes and 16-aligned, room for the link.
        unsafe { (*block).next = *slot };
        *slot = block;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_blocks_are_zero_whether_reused_or_freshly_mapped() {
        let alloc = OwnAllocator::new();
        let small = Layout::from_size_align(4096, 16).unwrap();
        let large = Layout::from_size_align(200_000, 64).unwrap();
        for layout in [small, large] {
            // SAFETY: a non-zero layout; the block is written within its size and returned.
            unsafe {
                let dirty = alloc.alloc(layout);
                assert!(!dirty.is_null());
                core::ptr::write_bytes(dirty, 0xA5, layout.size());
                alloc.dealloc(dirty, layout);
                let zeroed = alloc.alloc_zeroed(layout);
                assert!(!zeroed.is_null());
                let bytes = core::slice::from_raw_parts(zeroed, layout.size());
                assert!(bytes.iter().all(|&b| b == 0), "{} bytes", layout.size());
                alloc.dealloc(zeroed, layout);
            }
        }
    }
}
