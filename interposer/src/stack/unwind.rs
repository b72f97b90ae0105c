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
}

/// Most stack switches (g0 → goroutine, signal stack → thread stack) a walk may cross.
const MAX_REGION_SWITCHES: u32 = 4;

/// The per-thread rule cache in `slot`, created on first use with our own allocator; None
/// when it cannot be created (out of memory).
pub fn thread_cache(slot: &mut *mut core::ffi::c_void) -> Option<&'static mut ThreadCache> {
    if slot.is_null() {
        // About 70 KiB built by value: on our own stack, as the thread's may be 16 KiB.
        let cache: Box<ThreadCache> = super::sidestack::run(new_thread_cache);
        *slot = Box::into_raw(cache) as *mut core::ffi::c_void;
        crate::process::thread_needs_cleanup();
    }
    // SAFETY: the slot holds this thread's own boxed cache; it is freed only by the thread's
    // key destructor, after which no hook runs on the thread.
    unsafe { (*slot as *mut ThreadCache).as_mut() }
}

/// Builds a cache. Never inlined: its frame holds the cache by value, and it must be the
/// side stack's frame, not the caller's.
#[inline(never)]
#[cold]
fn new_thread_cache() -> Box<ThreadCache> {
    Box::new(ThreadCache {
        rules: RuleCache::new(),
        framehop: CacheX86_64::new_in(),
        region: (0, 0, 0),
    })
}

/// Free a cache created by `thread_cache` (thread exit).
///
/// # Safety
/// `p` must come from `thread_cache` and not be used afterwards.
pub unsafe fn free_thread_cache(p: *mut core::ffi::c_void) {
    if !p.is_null() {
        // SAFETY: forwarded contract.
        drop(unsafe { Box::from_raw(p as *mut ThreadCache) });
    }
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

/// Walk from the return address of the hooked call.
///
/// `ra` is the return address, `sp` the caller's stack pointer after the return and `bp`
/// the caller's RBP (callee-saved, so unchanged at our entry). Fills `out` innermost first.
pub fn capture_from_caller(
    bounds: (usize, usize),
    cache: &mut ThreadCache,
    ra: u64,
    sp: u64,
    bp: u64,
    out: &mut [u64],
) -> (usize, End) {
    let Some(set) = modules::pin() else {
        return only_return_address(ra, out);
    };
    modules::park_if_asked(&set);
    let Some((lo, hi)) = readable_stack(bounds, sp, cache) else {
        return only_return_address(ra, out);
    };
    if crate::config::try_get().is_some_and(|c| c.framehop_only) {
        let regs = UnwindRegsX86_64::new(ra, sp, bp);
        return walk(&set, cache, ra, regs, lo, hi, out, false);
    }
    walk_compact(&set, cache, ra, sp, bp, lo, hi, out)
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
    frame_pointer_walk(&set, &mut cache.region, bp, lo, hi, out, 1)
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
    loop {
        let packed =
            cache
                .rules
                .lookup_packed::<super::sidestack::SideStack>(&set.cfi, set.generation, ra);
        if let Some((from_bp, cfa_off, bp_off)) = Rule::frame(packed) {
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
            sp = cfa;
        } else {
            // Ok(true): unwound this frame; Ok(false): CFI ran out, frame pointers from here.
            let stepped = match Rule::unpack(packed) {
                Rule::End => return (n, End::Complete),
                // A compact frame was decoded above; anything else here is "not compact".
                Rule::NoCfi | Rule::Frame { .. } => false,
                Rule::Other => {
                    let mut regs = UnwindRegsX86_64::new(ra, sp, bp);
                    let mut read = |addr: u64| -> Result<u64, ()> {
                        if readable(addr) {
                            // SAFETY: as above, checked against the thread's stack.
                            Ok(unsafe { *(addr as *const u64) })
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
                let region = &mut cache.region;
                return frame_pointer_walk(set, region, bp, stack_lo, stack_hi, out, n);
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
fn frame_pointer_walk(
    set: &ModuleSet,
    region_cache: &mut (u64, u64, u64),
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
                _ => return (n, End::Broken),
            };
        }
        // SAFETY: [bp, bp + 16) is inside a region proven mapped and readable above.
        let (next, ra) = unsafe { (*(bp as *const u64), *((bp + 8) as *const u64)) };
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
