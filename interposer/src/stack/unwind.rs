//! In-hook stack capture: CFI for C frames, frame pointers for Go frames.
//!
//! C code (glibc, gcc -O2 without frame pointers, cgo wrappers that use RBP as a general
//! register) is walked with framehop over `.eh_frame`, with a per-thread rule cache. Go code
//! has no `.eh_frame`; when framehop reaches it (a return address in `runtime.asmcgocall`, or
//! `systemstack` on the g0 stack) the recovered RBP is the goroutine's frame pointer and the
//! rest of the walk follows the frame-pointer chain, across the g0 → goroutine stack switch.
//! No read happens before it is proven safe: the thread's own stack (from /proc/self/maps,
//! once per thread) or a readable mapping in our own mmap table (Go's arenas, where goroutine
//! stacks live). Nothing here allocates except the one-time per-thread rule cache.

use super::modules::{self, ModuleSet};
use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64};
use framehop::{FrameAddress, MustNotAllocateDuringUnwind, Unwinder};
use offheap_core::stack::rules::{Rule, RuleCache};
use offheap_core::stack::walkcache::{Key, Reads, WalkCache};
use offheap_core::stack::End;
use offheap_core::table::intervals;

/// Per-thread unwinding state: the compact rule cache and framehop's own cache for the
/// frames whose rules do not fit the compact form.
pub struct ThreadCache {
    rules: RuleCache,
    framehop: CacheX86_64<MustNotAllocateDuringUnwind>,
    /// The last readable mmap region (a Go arena) a frame-pointer walk used, and the
    /// interval-table generation under which it was proven readable.
    region: (u64, u64, u64),
    /// Recent walks by starting state, answered again without walking when unchanged. Boxed on
    /// its own: it is ~560 KiB, left unbacked until its ways fill.
    walks: Box<WalkCache>,
    /// The words the current walk reads (for the walk cache).
    reads: Reads,
    /// Lookups and hits not yet added to the process-wide counts.
    unflushed: (u64, u64),
}

/// Process-wide walk-cache counts for the dump's self statistics (added in batches).
static LOOKUPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
static HITS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
const FLUSH_EVERY: u64 = 256;

/// (stacks asked for, answered by the walk cache) so far.
pub fn walk_counts() -> (u64, u64) {
    (
        LOOKUPS.load(core::sync::atomic::Ordering::Relaxed),
        HITS.load(core::sync::atomic::Ordering::Relaxed),
    )
}

impl ThreadCache {
    #[inline(always)]
    fn count(&mut self, hit: bool) {
        self.unflushed.0 += 1;
        self.unflushed.1 += hit as u64;
        if self.unflushed.0 >= FLUSH_EVERY {
            self.flush_counts();
        }
    }

    fn flush_counts(&mut self) {
        LOOKUPS.fetch_add(self.unflushed.0, core::sync::atomic::Ordering::Relaxed);
        HITS.fetch_add(self.unflushed.1, core::sync::atomic::Ordering::Relaxed);
        self.unflushed = (0, 0);
    }
}

/// Most stack switches (g0 → goroutine, signal stack → thread stack) a walk may cross.
const MAX_REGION_SWITCHES: u32 = 4;

/// The per-thread rule cache in `slot`, created on first use in a mapping of its own; None
/// when it cannot be created (out of memory).
#[inline(always)]
pub fn thread_cache(slot: &mut *mut core::ffi::c_void) -> Option<&'static mut ThreadCache> {
    if slot.is_null() {
        first_thread_cache(slot);
    }
    // SAFETY: the slot holds this thread's own cache; it is freed only by the thread's key
    // destructor, after which no hook runs on the thread.
    unsafe { (*slot as *mut ThreadCache).as_mut() }
}

/// Creates this thread's cache into `slot` (left null when it cannot be had).
#[cold]
#[inline(never)]
fn first_thread_cache(slot: &mut *mut core::ffi::c_void) {
    // About 50 KiB built by value: on our own stack, as the thread's may be 16 KiB.
    let cache = super::sidestack::run(new_thread_cache);
    if cache.is_null() {
        return;
    }
    *slot = cache as *mut core::ffi::c_void;
    crate::process::thread_needs_cleanup();
}

/// An idle cache a thread left (`recycle`), else one built in a fresh mapping (null when none
/// can be had). Not from the own allocator's pools: a pooled block stays resident after its
/// thread exits, so a burst of threads would leave its high-water mark of caches behind (a
/// 10,000-thread storm kept 3 MiB more than a 2,000-thread one); beyond the few `recycle`
/// keeps, the caches are unmapped with their threads. Never
/// inlined: its frame holds the cache by value, and it must be the side stack's frame, not
/// the caller's.
#[inline(never)]
#[cold]
fn new_thread_cache() -> *mut ThreadCache {
    if let Some(idle) = super::recycle::CACHES.take() {
        let p = idle as *mut ThreadCache;
        // SAFETY: the pool holds only caches a thread gave back at its exit (see
        // `free_thread_cache`), which nothing references since; this thread owns it now.
        let cache = unsafe { &mut *p };
        // The rules, the framehop cache and the walk cache stay: they are keyed by code
        // addresses and by the stack range a walk ran in (words outside it are checked
        // against the interval table's generation), so what is in them is right for any
        // thread, as it stays right for a long-lived thread across dlclose and munmap; and
        // warm for a thread that gets the same stack back from glibc. The last readable
        // region and the walk's scratch start afresh.
        cache.region = (0, 0, 0);
        cache.reads = Reads::new();
        cache.unflushed = (0, 0);
        return p;
    }
    // framehop's cache boxes its parts (tens of KiB) through an allocation that cannot fail:
    // room for them first, or no cache (the thread's stacks are then not taken), never an
    // abort of the host in Rust's allocation-failure handler.
    if !crate::OWN_ALLOCATOR.ensure_room(FRAMEHOP_ROOM) {
        return core::ptr::null_mut();
    }
    let Some(walks) = WalkCache::boxed() else {
        return core::ptr::null_mut();
    };
    let p = offheap_core::sys::map_own(core::mem::size_of::<ThreadCache>()) as *mut ThreadCache;
    if !p.is_null() {
        let cache = ThreadCache {
            rules: RuleCache::new(),
            framehop: CacheX86_64::new_in(),
            region: (0, 0, 0),
            walks,
            reads: Reads::new(),
            unflushed: (0, 0),
        };
        // SAFETY: `p` is a fresh, page-aligned (so aligned for ThreadCache) mapping of at least
        // size_of::<ThreadCache>() bytes that nothing else references.
        unsafe { p.write(cache) };
    }
    p
}

/// Pool room asked for before framehop's cache is built: its boxed parts with a wide margin.
const FRAMEHOP_ROOM: usize = 256 * 1024;

/// Free a cache created by `thread_cache` (thread exit).
///
/// # Safety
/// `p` must come from `thread_cache` and not be used afterwards.
pub unsafe fn free_thread_cache(p: *mut core::ffi::c_void) {
    let cache = p as *mut ThreadCache;
    // SAFETY: forwarded contract: a live cache of this thread's, not referenced elsewhere.
    let Some(live) = (unsafe { cache.as_mut() }) else {
        return;
    };
    live.flush_counts();
    if super::recycle::CACHES.give(p as usize) {
        return;
    }
    // SAFETY: as above; the cache is not used after this drop.
    unsafe { core::ptr::drop_in_place(cache) };
    offheap_core::sys::unmap_own(p as *mut u8, core::mem::size_of::<ThreadCache>());
}

/// The range a walk starting at `sp` may read: the thread's own stack when `sp` is in it,
/// else a readable mapping of our interval table that holds `sp` (Go's signal stacks,
/// stacks the program mapped itself); None when nothing proves `sp`'s stack readable.
fn readable_stack(bounds: (usize, usize), sp: u64, cache: &mut ThreadCache) -> Option<(u64, u64)> {
    let (lo, hi) = (bounds.0 as u64, bounds.1 as u64);
    if lo <= sp && sp < hi {
        return Some((sp, hi));
    }
    let (_, region_hi) = readable_region(&mut cache.region, sp, 0, 0)?;
    Some((sp, region_hi))
}

/// The interned stack of the hooked call: from the walk cache when this thread walked from
/// the same state before and nothing it read has changed, else walked and interned (`intern`)
/// and remembered.
///
/// `ra` is the return address, `sp` the caller's stack pointer after the return and `bp`
/// the caller's RBP (callee-saved, so unchanged at our entry). `out` is the frame buffer.
pub fn stack_of_caller(
    bounds: (usize, usize),
    cache: &mut ThreadCache,
    (ra, sp, bp): (u64, u64, u64),
    out: &mut [u64],
    intern: impl FnOnce(&[u64], End) -> u32,
) -> u32 {
    let Some((lo, hi)) = readable_stack(bounds, sp, cache) else {
        let (n, end) = only_return_address(ra, out);
        return intern(out.get(..n).unwrap_or(&[]), end);
    };
    let intervals = || crate::state::get().map_or(0, |st| st.intervals.generation());
    let key = |generation| Key {
        ra,
        sp,
        bp,
        generation,
        stack_hi: hi,
        intervals: 0,
    };
    // A hit needs no module set at all (it reads only stack words): no pin. (With
    // OFFHEAP_UNWINDER=framehop nothing is ever recorded, so every lookup misses.)
    //
    // SAFETY (of each read): the key matched, so every recorded address was proven readable
    // for a walk from this same stack pointer with this same range top — inside [sp, hi),
    // which readable_stack proved mapped for this walk too — or in a mapping the interval
    // table has not seen change since (its generation is part of the key). The one word read
    // before a key is compared (a way's first word) is read only when it is 8-aligned inside
    // [sp, hi) itself (see `WalkCache::lookup`).
    let hit = cache
        .walks
        .lookup(&key(modules::generation()), intervals, |addr| unsafe {
            *(addr as *const u64)
        });
    cache.count(hit.is_some());
    if let Some(id) = hit {
        return id;
    }
    let framehop_only = crate::config::try_get().is_some_and(|c| c.framehop_only);
    let Some(set) = modules::pin() else {
        let (n, end) = only_return_address(ra, out);
        return intern(out.get(..n).unwrap_or(&[]), end);
    };
    modules::park_if_asked(&set);
    if framehop_only {
        let regs = UnwindRegsX86_64::new(ra, sp, bp);
        let (n, end) = walk(&set, cache, ra, regs, lo, hi, out, false);
        return intern(out.get(..n).unwrap_or(&[]), end);
    }
    cache.reads.clear();
    let own_stack = (bounds.0 as u64) <= sp && sp < bounds.1 as u64;
    if !own_stack {
        cache.reads.outside();
    }
    let (n, end) = walk_compact(&set, cache, ra, sp, bp, lo, hi, out);
    let id = intern(out.get(..n).unwrap_or(&[]), end);
    if id != offheap_core::stack::store::NO_STACK {
        let reads = &cache.reads;
        cache
            .walks
            .insert(key(set.generation), reads, intervals(), id);
    }
    id
}

/// Walk from a Go function's entry: `sp` points at its return address (on a goroutine stack
/// or g0), `bp` is its caller's frame pointer. Go code keeps frame pointers, so the rest of
/// the walk is the frame-pointer chain.
pub fn capture_go(
    bounds: (usize, usize),
    cache: &mut ThreadCache,
    sp: u64,
    bp: u64,
    out: &mut [u64],
) -> (usize, End) {
    let Some(set) = modules::pin() else {
        return (0, End::Broken);
    };
    let Some((lo, hi)) = readable_stack(bounds, sp, cache) else {
        return (0, End::Broken);
    };
    if sp & 7 != 0 || sp.wrapping_add(8) > hi {
        return (0, End::Broken);
    }
    // SAFETY: [sp, sp + 8) lies, 8-aligned, in a range proven mapped and readable.
    let ra = unsafe { *(sp as *const u64) };
    let Some(first) = out.first_mut() else {
        return (0, End::Truncated);
    };
    *first = ra;
    let (region, reads) = (&mut cache.region, &mut cache.reads);
    frame_pointer_walk(&set, region, reads, bp, lo, hi, out, 1)
}

/// A stack of one frame, when nothing more can be proven readable.
fn only_return_address(ra: u64, out: &mut [u64]) -> (usize, End) {
    match out.first_mut() {
        Some(f) => {
            *f = ra;
            (1, End::Broken)
        }
        None => (0, End::Truncated),
    }
}

/// The hot walk: compact rules from the per-thread cache, framehop for odd frames, frame
/// pointers once CFI runs out (Go).
#[allow(clippy::too_many_arguments)]
fn walk_compact(
    set: &ModuleSet,
    cache: &mut ThreadCache,
    mut ra: u64,
    mut sp: u64,
    mut bp: u64,
    stack_lo: u64,
    stack_hi: u64,
    out: &mut [u64],
) -> (usize, End) {
    let readable =
        |addr: u64| addr >= stack_lo && addr.wrapping_add(8) <= stack_hi && addr & 7 == 0;
    if ra == 0 {
        return (0, End::Complete);
    }
    let Some(first) = out.first_mut() else {
        return (0, End::Truncated);
    };
    *first = ra;
    let mut n = 1;
    let mut bp_from = BpFrom::Entry;
    loop {
        let packed =
            cache
                .rules
                .lookup_packed::<super::sidestack::SideStack>(&set.cfi, set.generation, ra);
        if let Some((from_bp, cfa_off, bp_off)) = Rule::frame(packed) {
            if from_bp {
                bp_from.used(&mut cache.reads);
            }
            let cfa = if from_bp { bp } else { sp }.wrapping_add(cfa_off as i64 as u64);
            let ra_at = cfa.wrapping_sub(8);
            let bp_at = cfa.wrapping_add(bp_off as i64 as u64);
            if cfa <= sp || !readable(ra_at) || (bp_off != 0 && !readable(bp_at)) {
                return (n, End::Broken);
            }
            // SAFETY: both addresses were just checked to lie, 8-aligned, inside this
            // thread's mapped stack above the stack pointer at our entry.
            unsafe {
                ra = *(ra_at as *const u64);
                if bp_off != 0 {
                    bp = *(bp_at as *const u64);
                }
            }
            cache.reads.log(ra_at, ra);
            if bp_off != 0 {
                bp_from = BpFrom::Stack(bp_at, bp);
            }
            sp = cfa;
        } else {
            // Ok(true): unwound this frame; Ok(false): CFI ran out, frame pointers from here.
            let rule = Rule::unpack(packed);
            if !matches!(rule, Rule::End) {
                // Whatever comes next (framehop's rules, frame pointers) may read RBP.
                bp_from.used(&mut cache.reads);
            }
            let stepped = match rule {
                Rule::End => return (n, End::Complete),
                // A compact frame was decoded above; anything else here is "not compact".
                Rule::NoCfi | Rule::Frame { .. } => false,
                Rule::Other => {
                    let mut regs = UnwindRegsX86_64::new(ra, sp, bp);
                    let reads = &mut cache.reads;
                    let mut read = |addr: u64| -> Result<u64, ()> {
                        if readable(addr) {
                            // SAFETY: as above, checked against the thread's stack.
                            let v = unsafe { *(addr as *const u64) };
                            reads.log(addr, v);
                            Ok(v)
                        } else {
                            Err(())
                        }
                    };
                    let Some(address) = FrameAddress::from_return_address(ra) else {
                        return (n, End::Complete);
                    };
                    let framehop = &mut cache.framehop;
                    // framehop may evaluate CFI here: deep, so on our own stack.
                    let step = super::sidestack::run(|| {
                        set.unwinder
                            .unwind_frame(address, &mut regs, framehop, &mut read)
                    });
                    match step {
                        Ok(Some(next)) => {
                            ra = next;
                            sp = regs.sp();
                            bp = regs.bp();
                            true
                        }
                        Ok(None) => return (n, End::Complete),
                        Err(_) => false,
                    }
                }
            };
            if !stepped {
                let (region, reads) = (&mut cache.region, &mut cache.reads);
                return frame_pointer_walk(set, region, reads, bp, stack_lo, stack_hi, out, n);
            }
        }
        if ra == 0 {
            return (n, End::Complete);
        }
        let Some(slot) = out.get_mut(n) else {
            return (n, End::Truncated);
        };
        *slot = ra;
        n += 1;
    }
}

/// Where the compact walk's RBP came from, until a rule uses it (see the walk cache's module
/// docs: a value nothing used did not decide the walk, so a cached walk does not compare it).
#[derive(Clone, Copy)]
enum BpFrom {
    /// The frame pointer the walk started with.
    Entry,
    /// Restored from this stack word, which held this value.
    Stack(u64, u64),
    /// Already accounted for.
    Used,
}

impl BpFrom {
    /// RBP decides the walk from here: its source joins what a cached walk must find again.
    #[inline(always)]
    fn used(&mut self, reads: &mut Reads) {
        match *self {
            BpFrom::Entry => reads.used_entry_bp(),
            BpFrom::Stack(addr, value) => reads.log(addr, value),
            BpFrom::Used => {}
        }
        *self = BpFrom::Used;
    }
}

/// Walk from inside our own code, dropping the frames of the library itself. Used where a
/// trampoline cannot hand us the caller's registers (the six-argument mmap family).
#[inline(never)]
pub fn capture_here(
    bounds: (usize, usize),
    cache: &mut ThreadCache,
    out: &mut [u64],
) -> (usize, End) {
    let (ip, sp, bp): (u64, u64, u64);
    // SAFETY: reads the current instruction pointer, stack pointer and frame pointer; no
    // memory is touched.
    unsafe {
        core::arch::asm!(
            "lea {ip}, [rip]",
            "mov {sp}, rsp",
            "mov {bp}, rbp",
            ip = out(reg) ip,
            sp = out(reg) sp,
            bp = out(reg) bp,
            options(nomem, nostack, preserves_flags)
        );
    }
    let Some(set) = modules::pin() else {
        return (0, End::Broken);
    };
    let Some((_, hi)) = readable_stack(bounds, sp, cache) else {
        return (0, End::Broken);
    };
    // framehop evaluates CFI on every frame here: run the walk on our own stack.
    super::sidestack::run(|| {
        walk(
            &set,
            cache,
            ip,
            UnwindRegsX86_64::new(ip, sp, bp),
            sp,
            hi,
            out,
            true,
        )
    })
}

#[allow(clippy::too_many_arguments)]
fn walk(
    set: &ModuleSet,
    cache: &mut ThreadCache,
    first: u64,
    mut regs: UnwindRegsX86_64,
    stack_lo: u64,
    stack_hi: u64,
    out: &mut [u64],
    skip_own: bool,
) -> (usize, End) {
    let mut read = |addr: u64| -> Result<u64, ()> {
        if addr >= stack_lo && addr.wrapping_add(8) <= stack_hi && addr & 7 == 0 {
            // SAFETY: addr is 8-aligned inside the calling thread's own mapped stack, above
            // the current stack pointer, so it is mapped and readable.
            Ok(unsafe { *(addr as *const u64) })
        } else {
            Err(())
        }
    };
    let mut n = 0usize;
    let mut address = if skip_own {
        FrameAddress::from_instruction_pointer(first)
    } else {
        match FrameAddress::from_return_address(first) {
            Some(a) => a,
            None => return (0, End::Complete),
        }
    };
    let mut skipping = skip_own;
    if !skipping {
        let Some(slot) = out.first_mut() else {
            return (0, End::Truncated);
        };
        *slot = first;
        n = 1;
    }
    loop {
        // Only sp and bp matter for the frame-pointer fallback; copying the whole register
        // file each frame showed up as a memcpy in profiles.
        let (saved_sp, saved_bp) = (regs.sp(), regs.bp());
        match set
            .unwinder
            .unwind_frame(address, &mut regs, &mut cache.framehop, &mut read)
        {
            Ok(Some(ra)) => {
                if skipping {
                    if set.own.0 <= ra && ra < set.own.1 {
                        address = match FrameAddress::from_return_address(ra) {
                            Some(a) => a,
                            None => return (n, End::Complete),
                        };
                        continue;
                    }
                    skipping = false;
                }
                let Some(slot) = out.get_mut(n) else {
                    return (n, End::Truncated);
                };
                *slot = ra;
                n += 1;
                address = match FrameAddress::from_return_address(ra) {
                    Some(a) => a,
                    None => return (n, End::Complete),
                };
            }
            Ok(None) => return (n, End::Complete),
            Err(_) => {
                let _ = saved_sp;
                return frame_pointer_walk(
                    set,
                    &mut cache.region,
                    &mut cache.reads,
                    saved_bp,
                    stack_lo,
                    stack_hi,
                    out,
                    n,
                );
            }
        }
    }
}

/// Continue along the frame-pointer chain (Go frames), proving each read safe.
#[allow(clippy::too_many_arguments)]
fn frame_pointer_walk(
    set: &ModuleSet,
    region_cache: &mut (u64, u64, u64),
    reads: &mut Reads,
    mut bp: u64,
    stack_lo: u64,
    stack_hi: u64,
    out: &mut [u64],
    mut n: usize,
) -> (usize, End) {
    let mut region = (stack_lo, stack_hi);
    let mut switches = 0u32;
    loop {
        if bp == 0 {
            return (n, End::Complete);
        }
        if bp & 7 != 0 {
            return (n, End::Broken);
        }
        if !(region.0 <= bp && bp + 16 <= region.1) {
            switches += 1;
            if switches > MAX_REGION_SWITCHES {
                return (n, End::Broken);
            }
            region = match readable_region(region_cache, bp, stack_lo, stack_hi) {
                Some(r) if r.0 <= bp && bp + 16 <= r.1 => r,
                _ => {
                    // The interval table may learn of this range later (a new mapping does not
                    // change its generation): a walk that ends here is not kept.
                    reads.not_cacheable();
                    return (n, End::Broken);
                }
            };
            if region != (stack_lo, stack_hi) {
                reads.outside();
            }
        }
        // SAFETY: [bp, bp + 16) is inside a region proven mapped and readable above.
        let (next, ra) = unsafe { (*(bp as *const u64), *((bp + 8) as *const u64)) };
        reads.log(bp, next);
        reads.log(bp + 8, ra);
        if ra == 0 {
            return (n, End::Complete);
        }
        if !set.is_code(ra) {
            return (n, End::Broken);
        }
        let Some(slot) = out.get_mut(n) else {
            return (n, End::Truncated);
        };
        *slot = ra;
        n += 1;
        // Within one stack the chain only moves towards older frames (higher addresses); a
        // switch to another stack is checked against that stack's region on the next turn.
        if next != 0 && next <= bp && region.0 <= next && next < region.1 {
            return (n, End::Broken);
        }
        bp = next;
    }
}

fn readable_region(
    cache: &mut (u64, u64, u64),
    addr: u64,
    stack_lo: u64,
    stack_hi: u64,
) -> Option<(u64, u64)> {
    if stack_lo <= addr && addr < stack_hi {
        return Some((stack_lo, stack_hi));
    }
    let state = crate::state::get()?;
    // The goroutine stacks a thread walks live in a few Go arena regions: remember the last
    // one, valid while no mapping has been removed or re-protected since it was proven.
    let (lo, hi, generation) = *cache;
    if generation == state.intervals.generation() && lo <= addr && addr < hi {
        return Some((lo, hi));
    }
    let map = state.intervals.lock_or_give_up()?;
    let generation = state.intervals.generation();
    let region = intervals::readable_region(&map, addr)?;
    *cache = (region.0, region.1, generation);
    Some(region)
}
