//! The tracking core's entry: what happens when memory is handed out or given back.
//!
//! The hooks only forward to the real functions and call in here; this layer knows nothing
//! about how it was reached. It decides whether to track (re-entrancy, sampling, sandbox),
//! captures and interns the stack, and updates the live tables and per-stack counters.
//! Nothing here allocates, touches errno or makes a system call on the common path; birth
//! times come from a per-thread clock read every few allocations (and whenever a dump has
//! happened since), which is also where a due periodic dump is noticed.

pub mod forklog;
pub mod mapping;

use crate::stack::unwind;
use crate::state::{self, State};
use crate::tls::{self, Inside};
use core::sync::atomic::Ordering;
use offheap_core::stack::store::{self, Counters, StripeOwners};
use offheap_core::table::live::{Inserted, Slot, FLAG_SAMPLED};
use offheap_core::table::Birth;

/// Where the stack walk starts.
#[derive(Clone, Copy)]
pub enum Caller {
    /// From a trampoline: the stack pointer at our entry (pointing at the return address)
    /// and the caller's frame pointer.
    Entry { sp: u64, bp: u64 },
    /// From inside the library: walk and drop our own frames.
    Here,
    /// No stack can be taken (an allocation played back from the fork window: see `forklog`).
    Unknown,
}

/// Allocations between two reads of the clock on one thread.
const CLOCK_EVERY: u32 = 16;

// A thread under a seccomp filter does not track: hooks there make no system call of ours
// (no table growth, no stack-cache set-up).
use crate::process::sandboxed;

/// Whether an allocation on this thread is the program's: none of our code is running, or
/// only the fork window is open (other libraries' fork handlers: see `forklog`).
///
/// # Safety
/// `ts` is this thread's state.
#[inline(always)]
unsafe fn programs_own(ts: *mut c_shim::ThreadState) -> bool {
    // SAFETY: forwarded contract: plain field reads through the raw pointer.
    unsafe { (*ts).depth == 0 || (*ts).flags & c_shim::THREAD_FORKING != 0 }
}

/// The sampler: true when this allocation of `size` bytes is to be tracked. Touches only the
/// thread's countdown (called before entering, so it must not take references).
///
/// The countdown is the bytes left before the next sample, unsigned: an allocation smaller
/// than what is left takes it down; one at least as large is sampled and draws the next gap
/// (the same test malloc's entry makes with the borrow of its subtraction).
#[inline(always)]
fn sampler_hit(size: usize, mean: u64) -> bool {
    let ts = tls::sampler();
    // SAFETY: field reads and writes of this thread's own state through the raw pointer; no
    // reference is created, so a hook interrupting us cannot alias one.
    unsafe {
        if !programs_own(ts) {
            return false;
        }
        if (*ts).initialised == 0 {
            (*ts).initialised = 1;
            (*ts).rng = (ts as u64) ^ offheap_core::sys::monotonic_ns() | 1;
            (*ts).sample_countdown = offheap_core::sampling::next_gap(&mut (*ts).rng, mean);
        }
        let left = (*ts).sample_countdown;
        if left > size as u64 {
            (*ts).sample_countdown = left - size as u64;
            return false;
        }
    }
    rearm(ts, mean);
    true
}

/// Sampling's fast path, before anything else: takes `size` off the thread's countdown and
/// says whether the allocation is certainly not sampled (the size was below what was left).
/// One TLS read-modify-write and no call: an unsampled malloc then costs the hook nothing but
/// this and a tail call to the real malloc. (On x86_64 malloc's entry makes this same test in
/// assembly, before any frame exists; this is the portable form.) Either way the countdown
/// has been taken down, wrapping, when `on_malloc` runs.
///
/// Every call this sends on reaches `on_malloc`, which sets the countdown anew: a draw while
/// sampling (`sampler_hit_after_entry`), 0 with full tracking and before the state exists (so
/// every call goes on), out of reach once the library is known to be inert.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn unsampled_alloc(size: usize) -> bool {
    let ts = tls::sampler();
    // SAFETY: a field read and write of this thread's own state through the raw pointer (no
    // reference; a signal handler's hook on this thread would see a consistent value).
    unsafe {
        let left = (*ts).sample_countdown;
        (*ts).sample_countdown = left.wrapping_sub(size as u64);
        left > size as u64
    }
}

/// As `sampler_hit`, for malloc, whose entry found `size` at least what was left and left the
/// countdown wrapped: sets it anew either way.
#[inline(always)]
fn sampler_hit_after_entry(size: usize, mean: u64) -> bool {
    let ts = tls::sampler();
    // SAFETY: as in sampler_hit: this thread's own state, through the raw pointer.
    unsafe {
        if !programs_own(ts) {
            // Not the program's allocation (a fork handler or a signal handler while ours
            // run): give the size back, so the program's next malloc is neither sure to be
            // sampled (it would be weighted as if it had been a chance) nor skipped.
            (*ts).sample_countdown = (*ts).sample_countdown.wrapping_add(size as u64);
            return false;
        }
        if (*ts).initialised == 0 {
            // The thread's first malloc found the countdown at 0: the first gap starts here.
            (*ts).initialised = 1;
            (*ts).rng = (ts as u64) ^ offheap_core::sys::monotonic_ns() | 1;
            let gap = offheap_core::sampling::next_gap(&mut (*ts).rng, mean);
            if gap > size as u64 {
                (*ts).sample_countdown = gap - size as u64;
                return false;
            }
        }
    }
    rearm(ts, mean);
    true
}

/// Full tracking, and a process whose state is not built yet: the countdown malloc's entry
/// took down goes back to 0, so the next malloc is sent on too.
#[inline(always)]
fn keep_countdown_at_zero() {
    let ts = tls::sampler();
    // SAFETY: a field write of this thread's own state through the raw pointer.
    unsafe { (*ts).sample_countdown = 0 };
}

/// No state to track into. If there never will be one (the library is inert), this thread's
/// countdown is set out of reach, so that malloc's entry forwards every later call itself, as
/// it does an unsampled one (an inert library cost a tcache pair 17 % more than no library,
/// every malloc coming this far to find no state). Before the constructor has decided, it
/// goes back to 0: the state may still come.
#[cold]
#[inline(never)]
fn countdown_without_state() {
    if state::inert() {
        let ts = tls::sampler();
        // SAFETY: a field write of this thread's own state through the raw pointer.
        unsafe { (*ts).sample_countdown = u64::MAX };
    } else {
        keep_countdown_at_zero();
    }
}

/// The next gap between samples (floating-point work, once per sample).
#[cold]
#[inline(never)]
fn rearm(ts: *mut c_shim::ThreadState, mean: u64) {
    // SAFETY: as in sampler_hit: this thread's own state, through the raw pointer.
    unsafe { (*ts).sample_countdown = offheap_core::sampling::next_gap(&mut (*ts).rng, mean) };
}

/// Birth facts for an allocation now: the per-thread clock refreshed every CLOCK_EVERY
/// allocations or when a dump happened since it was read; a refresh also notices a due dump.
#[inline(always)]
fn birth(st: &State, inside: &mut Inside, stack: u32, sampled: bool) -> Birth {
    let generation = st.generation.load(Ordering::Relaxed);
    let (ms, read_in, countdown) = inside.clock();
    if *read_in != generation || *countdown == 0 {
        *ms = st.uptime_ms() as u32;
        *read_in = generation;
        *countdown = CLOCK_EVERY;
        if (*ms as u64) >= st.next_due_ms.load(Ordering::Relaxed) {
            crate::dump::dumper::dump_due_seen();
        }
        crate::diag::flush_held();
    } else {
        *countdown -= 1;
    }
    Birth {
        stack,
        generation: generation as u16,
        epoch: st.epoch.load(Ordering::Relaxed),
        ms: *ms,
        sampled,
    }
}

/// A forked child younger than OFFHEAP_CHILD_MIN records its allocations (sizes, counts,
/// frees) but not their stacks: a child that dies young writes nothing, and capturing stacks
/// is what made its first allocations expensive — every new stack interned and every walk
/// cached writes pages that fork had just made copy-on-write (a shell's subshell took 2.6×
/// as long preloaded, 1.7× without stacks). Its records go to the young log, a few
/// contiguous pages, not to the table's slot arrays (wiped at the fork: every record would
/// fault in a fresh page). A child that lives on gets stacks from then on, its young
/// records move into the table, and its first CHILD_MIN of allocations show as "no stack".
#[inline(always)]
fn young_child(st: &State) -> bool {
    let from = st.stacks_from_ms.load(Ordering::Relaxed);
    if from == 0 {
        return false;
    }
    if st.uptime_ms() < from {
        return true;
    }
    st.stacks_from_ms.store(0, Ordering::Relaxed);
    st.close_young_log();
    false
}

/// Capture and intern the calling stack.
#[inline(always)]
fn stack_id(st: &State, inside: &mut Inside, caller: Caller) -> u32 {
    if young_child(st) || !st.config.stacks || matches!(caller, Caller::Unknown) {
        return store::NO_STACK;
    }
    let max = st.config.max_frames;
    let bounds = inside.stack_bounds();
    let cache = unwind::thread_cache(inside.unwind_cache());
    let Some(cache) = cache else {
        return store::NO_STACK;
    };
    let frames = inside.frames();
    let out = frames.get_mut(..max).unwrap_or(&mut []);
    match caller {
        Caller::Entry { sp, bp } => {
            // SAFETY: `sp` is the stack pointer at our entry; the call instruction just
            // stored the return address there.
            let ra = unsafe { *(sp as *const u64) };
            unwind::stack_of_caller(bounds, cache, (ra, sp + 8, bp), out, |f, end| {
                st.store.intern(f, end)
            })
        }
        Caller::Here => {
            let (n, end) = unwind::capture_here(bounds, cache, out);
            st.store.intern(out.get(..n).unwrap_or(&[]), end)
        }
        Caller::Unknown => store::NO_STACK,
    }
}

/// After our parent/child fork handler released the locks and left the library: what other
/// libraries' fork handlers allocated and freed meanwhile on this thread, tracked now.
pub fn play_fork_log() {
    let Some(st) = state::get() else { return };
    let lost = forklog::play(|op| match op {
        forklog::Op::Alloc {
            addr,
            size,
            sampled,
        } => record_alloc(st, addr, size as usize, Caller::Unknown, sampled),
        forklog::Op::Free { addr } => {
            forget_record(st, addr);
        }
    });
    if lost > 0 {
        st.lost_records.fetch_add(lost, Ordering::Relaxed);
    }
}

/// A block of `size` bytes was handed out at `addr` (calloc, realloc, the memalign family):
/// whether it is sampled is decided here, and the tracked part runs out of line, so an
/// unsampled call costs these checks and nothing else (inlined, the tracked part made every
/// such hook save six registers and reserve a frame first).
#[inline(always)]
pub fn on_alloc(addr: u64, size: usize, caller: Caller) {
    let Some(st) = state::get() else { return };
    let sampled = st.config.sample_bytes > 0;
    if sampled && !sampler_hit(size, st.config.sample_bytes) {
        return;
    }
    record_alloc_out_of_line(st, addr, size, caller, sampled);
}

/// As `on_alloc`, for malloc, whose entry point has already sent every unsampled call to the
/// real malloc (and taken the size off the countdown): everything is inlined into the one
/// frame of `malloc_tracked` (the calls between four frames, each saving registers and
/// reloading the thread pointer, were ~90 instructions and 8 ns of a 63 ns malloc+free pair
/// under full tracking). Called for failed mallocs too (`addr` 0): the countdown the entry
/// left wrapped is set anew whatever the outcome, and nothing here touches errno.
#[inline(always)]
pub fn on_malloc(addr: u64, size: usize, caller: Caller) {
    let Some(st) = state::get() else {
        countdown_without_state();
        return;
    };
    let sampled = st.config.sample_bytes > 0;
    if !sampled {
        keep_countdown_at_zero();
    } else if !sampler_hit_after_entry(size, st.config.sample_bytes) {
        return;
    }
    if addr != 0 {
        record_alloc(st, addr, size, caller, sampled);
    }
}

#[inline(never)]
fn record_alloc_out_of_line(st: &State, addr: u64, size: usize, caller: Caller, sampled: bool) {
    record_alloc(st, addr, size, caller, sampled);
}

/// The tracked part of an allocation.
#[inline(always)]
fn record_alloc(st: &State, addr: u64, size: usize, caller: Caller, sampled: bool) {
    let Some(mut inside) = Inside::enter() else {
        if forklog::forking() {
            forklog::write(forklog::Op::Alloc {
                addr,
                size: size as u64,
                sampled,
            });
        }
        return;
    };
    if sandboxed() {
        return;
    }
    // The walk hides the misses of the table and the filter.
    st.live.prefetch_home(addr);
    if sampled {
        state::SAMPLE_FILTER.prefetch_note(addr);
    }
    let stack = stack_id(st, &mut inside, caller);
    let birth = birth(st, &mut inside, stack, sampled);
    let stripe = stripe_of(st, &mut inside);
    if sampled {
        st.note_sampled(addr, true);
    }
    match st.insert_record(addr, size as u64, birth) {
        Inserted::New => {}
        Inserted::Replaced(old) => note_free(st, old.stack, old.size, stripe),
        Inserted::Lost => {
            st.lost_records.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    note_alloc(st, stack, size as u64, stripe);
}

/// Which exclusive counter stripes are owned by a thread.
pub static STRIPE_OWNERS: StripeOwners = StripeOwners::new();

/// This thread's counter stripe: an exclusive one claimed on first use while any is free,
/// else the shared stripe 0. (TLS keeps 1 + the stripe; 0 = not chosen yet.) `first` is the
/// stripe's counters (of the exclusive ids), kept in TLS too (null: the shared stripe, or none
/// yet).
#[derive(Clone, Copy)]
pub struct Stripe {
    index: u32,
    first: *mut Counters,
}

impl Stripe {
    /// The shared stripe (mapping calls are rare: not worth claiming a stripe for).
    pub const SHARED: Stripe = Stripe {
        index: 0,
        first: core::ptr::null_mut(),
    };
}

#[inline(always)]
pub fn stripe_of(st: &State, inside: &mut Inside) -> Stripe {
    let kept = inside.stripe(|| match STRIPE_OWNERS.claim() {
        Some(s) => {
            crate::process::thread_needs_cleanup();
            s + 1
        }
        None => 1,
    });
    let index = kept - 1;
    if index == 0 {
        return Stripe::SHARED;
    }
    if sandboxed() {
        // No system call of ours on this thread, so no counters are mapped for it: its
        // stripe's if they are at hand, else the shared stripe.
        return Stripe {
            index: 0,
            first: inside.kept_stripe_counters() as *mut Counters,
        };
    }
    let first =
        inside.stripe_counters(|| st.store.exclusive_counters(index) as *mut core::ffi::c_void);
    if first.is_null() {
        // No memory for the stripe's counters: the thread counts in the shared stripe from
        // now on (without this, every call would try to map them again).
        inside.set_stripe(1);
        STRIPE_OWNERS.release(index);
        return Stripe::SHARED;
    }
    Stripe {
        index,
        first: first as *mut Counters,
    }
}

/// Where this thread counts for `stack`.
#[inline(always)]
fn counters_of(st: &State, stack: u32, stripe: Stripe) -> offheap_core::stack::store::Bump<'_> {
    // SAFETY: `stripe.first` is null or the counters of this thread's own stripe, as
    // `stripe_of` read it from this thread's TLS (cleared when the stripe is given back).
    unsafe { st.store.counters_from(stack, stripe.index, stripe.first) }
}

/// Thread exit: give the thread's exclusive stripe back (its counts stay in it).
pub fn release_stripe() {
    let kept = tls::take_stripe();
    if kept > 1 {
        STRIPE_OWNERS.release(kept - 1);
    }
}

/// In a forked child: only this thread's stripe stays owned.
pub fn stripes_after_fork() {
    let kept = tls::stripe_kept();
    STRIPE_OWNERS.keep_only(kept.saturating_sub(1));
}

#[inline(always)]
pub fn note_free(st: &State, stack: u32, size: u64, stripe: Stripe) {
    counters_of(st, stack, stripe).add_frees(1, size);
}

/// Count an allocation of `bytes` for `stack`.
#[inline(always)]
pub fn note_alloc(st: &State, stack: u32, bytes: u64, stripe: Stripe) {
    counters_of(st, stack, stripe).add_allocs(1, bytes);
}

/// Whether the block at `addr` may have a record: false when the sampling filter says it was
/// never sampled (and always before the state exists: the filter is still empty), true for
/// every block with full tracking. Null is not ruled out here (one test fewer on every free);
/// the tracked paths below ignore it.
#[inline(always)]
pub fn may_be_tracked(addr: u64) -> bool {
    state::SAMPLE_FILTER.maybe_sampled(addr)
}

/// The block at `addr` is about to be released; returns its record if it was tracked (realloc
/// puts it back when the release does not happen).
#[inline(always)]
pub fn on_free(addr: u64) -> Option<Slot> {
    if addr == 0 || !may_be_tracked(addr) {
        return None;
    }
    record_free(state::get()?, addr)
}

/// For `free`, with a block `may_be_tracked` did not rule out: as `on_free`, but nothing is
/// returned, so the record's fields that counting does not read are never unpacked or copied
/// out (4 instructions a pair).
#[inline(always)]
pub fn on_released(addr: u64) {
    if addr == 0 {
        return;
    }
    if let Some(st) = state::get() {
        record_release(st, addr);
    }
}

/// The tracked part of a free, out of line (see `record_alloc`).
#[inline(never)]
fn record_free(st: &State, addr: u64) -> Option<Slot> {
    forget_record(st, addr)
}

/// As `record_free`, returning nothing, inlined into `free`'s tracked path (one frame).
#[inline(always)]
fn record_release(st: &State, addr: u64) {
    forget_record(st, addr);
}

#[inline(always)]
fn forget_record(st: &State, addr: u64) -> Option<Slot> {
    let Some(mut inside) = Inside::enter() else {
        if forklog::forking() {
            forklog::write(forklog::Op::Free { addr });
        }
        return None;
    };
    if st.config.sample_bytes > 0 {
        // The filter's lines load while the table's do.
        state::SAMPLE_FILTER.prefetch_note(addr);
    }
    let rec = st.remove_record(addr)?;
    if rec.flags & FLAG_SAMPLED != 0 {
        st.note_sampled(addr, false);
    }
    note_free(st, rec.stack, rec.size, stripe_of(st, &mut inside));
    Some(rec)
}

/// Put back a record removed by `on_free` when the release did not happen (failed realloc).
pub fn restore(rec: Slot) {
    let Some(st) = state::get() else { return };
    let Some(mut inside) = Inside::enter() else {
        return;
    };
    let birth = Birth {
        stack: rec.stack,
        generation: rec.generation,
        epoch: rec.epoch,
        ms: rec.birth_ms,
        sampled: rec.flags & FLAG_SAMPLED != 0,
    };
    if birth.sampled {
        st.note_sampled(rec.addr, true);
    }
    if let Inserted::Lost = st.insert_record(rec.addr, rec.size, birth) {
        st.lost_records.fetch_add(1, Ordering::Relaxed);
    }
    let stripe = stripe_of(st, &mut inside);
    counters_of(st, rec.stack, stripe).add_frees(1u64.wrapping_neg(), rec.size.wrapping_neg());
}

/// Birth of a mapping made by Go code through a raw system call: the walk starts at the
/// return address on the Go stack (`sp` at the probe's entry) and follows the caller's
/// frame-pointer chain (`bp`).
pub fn go_birth(sp: u64, bp: u64) -> Option<Birth> {
    let st = state::get()?;
    let mut inside = Inside::enter()?;
    if sandboxed() {
        return None;
    }
    let stack = if st.config.stacks {
        let max = st.config.max_frames;
        let bounds = inside.stack_bounds();
        match unwind::thread_cache(inside.unwind_cache()) {
            Some(cache) => {
                let frames = inside.frames();
                let out = frames.get_mut(..max).unwrap_or(&mut []);
                let (n, end) = unwind::capture_go(bounds, cache, sp, bp, out);
                st.store.intern(out.get(..n).unwrap_or(&[]), end)
            }
            None => store::NO_STACK,
        }
    } else {
        store::NO_STACK
    };
    Some(birth(st, &mut inside, stack, false))
}

/// The stack of a `pthread_create` call (from inside our hook), interned like an
/// allocation's; 0 when nothing can be captured here.
pub fn creator_stack() -> u32 {
    let Some(st) = state::get() else {
        return store::NO_STACK;
    };
    let Some(mut inside) = Inside::enter() else {
        return store::NO_STACK;
    };
    if sandboxed() {
        return store::NO_STACK;
    }
    stack_id(st, &mut inside, Caller::Here)
}
