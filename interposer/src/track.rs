//! The tracking core: what happens when memory is handed out or given back.
//!
//! The hooks only forward to libc and call in here; this layer knows nothing about how it was
//! reached. It decides whether to track (re-entrancy, sampling), captures and interns the
//! stack, and updates the live tables and per-stack counters. Errno is preserved by the
//! rare slow paths that make system calls (our own mappings, the first walk of a thread);
//! nothing here allocates or touches errno on the common path.

use crate::stack::unwind;
use crate::state::{self, State};
use c_shim::{thread_state, ThreadState};
use core::sync::atomic::Ordering;
use offheap_core::stack::store;
use offheap_core::table::live::{Inserted, FLAG_SAMPLED};

/// Where the stack walk starts.
#[derive(Clone, Copy)]
pub enum Caller {
    /// From a trampoline: the stack pointer at our entry (pointing at the return address)
    /// and the caller's frame pointer.
    Entry { sp: u64, bp: u64 },
    /// From inside the library: walk and drop our own frames.
    Here,
}

/// Marks the thread busy for the guard's life: allocations made by our own work (or by a
/// signal handler interrupting it) pass through untracked instead of recursing.
pub struct Busy<'a> {
    pub ts: &'a mut ThreadState,
}

impl<'a> Busy<'a> {
    #[inline(always)]
    pub fn enter() -> Option<Busy<'a>> {
        let ts = thread_state();
        if ts.busy != 0 {
            return None;
        }
        ts.busy = 1;
        Some(Busy { ts })
    }
}

impl Drop for Busy<'_> {
    #[inline(always)]
    fn drop(&mut self) {
        self.ts.busy = 0;
    }
}

/// Run `f` with the thread marked busy (for our own code outside hooks).
pub fn as_busy<R>(f: impl FnOnce() -> R) -> R {
    let ts = thread_state();
    ts.busy += 1;
    let r = f();
    thread_state().busy -= 1;
    r
}

#[inline(always)]
fn sampler_hit(ts: &mut ThreadState, size: usize, mean: u64) -> bool {
    if ts.initialised == 0 {
        ts.initialised = 1;
        ts.rng = (ts as *mut ThreadState as u64) ^ offheap_core::sys::monotonic_ns() | 1;
        ts.sample_countdown = next_exponential(ts, mean);
    }
    ts.sample_countdown -= size as i64;
    if ts.sample_countdown > 0 {
        return false;
    }
    ts.sample_countdown = next_exponential(ts, mean);
    true
}

fn next_exponential(ts: &mut ThreadState, mean: u64) -> i64 {
    // xorshift64*: cheap and good enough to space samples.
    let mut x = ts.rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    ts.rng = x;
    let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
    let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    ((-u.ln()) * mean as f64) as i64 + 1
}

/// Capture and intern the calling stack.
#[inline(always)]
fn stack_id(st: &State, ts: &mut ThreadState, caller: Caller) -> u32 {
    if !st.config.stacks {
        return store::NO_STACK;
    }
    let max = st.config.max_frames;
    // The buffer lives in the thread state; take it out of the borrow for the walk.
    let buf: *mut [u64; 256] = &mut ts.frames;
    // SAFETY: `frames` is only used here and the busy flag guarantees no re-entrant capture
    // on this thread, so the buffer is exclusively ours for the walk.
    let out = unsafe { &mut (&mut *buf)[..max] };
    let (n, end) = match caller {
        Caller::Entry { sp, bp } => {
            // SAFETY: `sp` is the stack pointer at our entry; the call instruction just
            // stored the return address there.
            let ra = unsafe { *(sp as *const u64) };
            unwind::capture_from_caller(ts, ra, sp + 8, bp, out)
        }
        Caller::Here => unwind::capture_here(ts, out),
    };
    st.store.intern(&out[..n], end)
}

/// A block of `size` bytes was handed out at `addr`.
#[inline(always)]
pub fn on_alloc(addr: u64, size: usize, caller: Caller) {
    let Some(st) = state::get() else { return };
    let sampled = st.config.sample_bytes > 0;
    if sampled {
        // The unsampled common case touches only this thread's countdown.
        let ts = thread_state();
        if ts.busy != 0 || !sampler_hit(ts, size, st.config.sample_bytes) {
            return;
        }
    }
    let Some(busy) = Busy::enter() else { return };
    let stack = stack_id(st, busy.ts, caller);
    if sampled {
        let slot = st.filter_slot(addr);
        if slot.load(Ordering::Relaxed) != u8::MAX {
            slot.fetch_add(1, Ordering::Relaxed);
        }
    }
    let birth = st.birth(stack, sampled);
    let stripe = stripe_of(busy.ts);
    match st.live.insert(addr, size as u64, birth) {
        Inserted::New => {}
        Inserted::Replaced(old) => note_free(st, old.stack, old.size, stripe),
        Inserted::Lost => {
            st.lost_records.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
    let c = st.store.counters(stack, stripe);
    c.allocs.fetch_add(1, Ordering::Relaxed);
    c.alloc_bytes.fetch_add(size as u64, Ordering::Relaxed);
}

static NEXT_STRIPE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// This thread's counter stripe, assigned round-robin on first use.
#[inline(always)]
pub fn stripe_of(ts: &mut ThreadState) -> u32 {
    if ts.stripe == 0 {
        ts.stripe = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % store::STRIPES as u32 + 1;
    }
    ts.stripe
}

#[inline(always)]
pub fn note_free(st: &State, stack: u32, size: u64, stripe: u32) {
    let c = st.store.counters(stack, stripe);
    c.frees.fetch_add(1, Ordering::Relaxed);
    c.free_bytes.fetch_add(size, Ordering::Relaxed);
}

/// Count an allocation of `bytes` for `stack` (mmap family).
pub fn note_alloc(st: &State, stack: u32, bytes: u64, stripe: u32) {
    let c = st.store.counters(stack, stripe);
    c.allocs.fetch_add(1, Ordering::Relaxed);
    c.alloc_bytes.fetch_add(bytes, Ordering::Relaxed);
}

/// The block at `addr` is about to be released; returns its record if it was tracked.
#[inline(always)]
pub fn on_free(addr: u64) -> Option<offheap_core::table::live::Slot> {
    let st = state::get()?;
    if st.config.sample_bytes > 0 && st.filter_slot(addr).load(Ordering::Relaxed) == 0 {
        return None;
    }
    let busy = Busy::enter()?;
    let rec = st.live.remove(addr)?;
    if rec.flags & FLAG_SAMPLED != 0 {
        let slot = st.filter_slot(addr);
        if slot.load(Ordering::Relaxed) != u8::MAX {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
    note_free(st, rec.stack, rec.size, stripe_of(busy.ts));
    Some(rec)
}

/// Put back a record removed by `on_free` when the release did not happen (failed realloc).
pub fn restore(rec: offheap_core::table::live::Slot) {
    let Some(st) = state::get() else { return };
    let Some(busy) = Busy::enter() else { return };
    let birth = offheap_core::table::Birth {
        stack: rec.stack,
        generation: rec.generation,
        epoch: rec.epoch,
        ms: rec.birth_ms,
        sampled: rec.flags & FLAG_SAMPLED != 0,
    };
    if birth.sampled {
        st.filter_slot(rec.addr).fetch_add(1, Ordering::Relaxed);
    }
    st.live.insert(rec.addr, rec.size, birth);
    let c = st.store.counters(rec.stack, stripe_of(busy.ts));
    c.frees.fetch_sub(1, Ordering::Relaxed);
    c.free_bytes.fetch_sub(rec.size, Ordering::Relaxed);
}

/// Capture a stack for an mmap-family call (always tracked, never sampled).
pub fn mmap_birth(st: &State, ts: &mut ThreadState) -> offheap_core::table::Birth {
    let stack = stack_id(st, ts, Caller::Here);
    st.birth(stack, false)
}
