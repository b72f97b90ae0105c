//! The calling thread's state, and the one definition of "inside the library".
//!
//! A thread is *inside* while our own code runs on it (a hook's bookkeeping, the dumper, the
//! constructor): anything it reaches that would hook again (our allocations, a signal
//! handler's malloc) passes straight through instead of recursing. `depth` counts it:
//! [`Inside::enter`] is the hooks' entry (only from depth 0), [`as_inside`] nests for our own
//! code outside hooks.
//!
//! Nothing here hands out a reference to the whole per-thread struct: a signal handler may
//! run a hook on this thread at any instruction, and it reads `depth` through the raw
//! pointer. The guard gives references to single fields (the frame buffer, the unwinder
//! cache pointer), so no two live references ever cover the same field.

use c_shim::{thread_state_ptr, ThreadState};

/// Proof that this thread entered the library from a hook (depth 0 → 1), released on drop.
/// Not `Send`: the state is the thread's own.
pub struct Inside {
    ts: *mut ThreadState,
}

impl Inside {
    /// Enter from a hook; None if our own code is already running on this thread.
    #[inline(always)]
    pub fn enter() -> Option<Inside> {
        let ts = thread_state_ptr();
        // SAFETY: ts is this thread's TLS struct; only this thread touches it, and `depth`
        // is read and written through the raw pointer, never through a reference.
        unsafe {
            if (*ts).depth != 0 {
                return None;
            }
            (*ts).depth = 1;
        }
        Some(Inside { ts })
    }

    /// The capture buffer.
    #[inline(always)]
    pub fn frames(&mut self) -> &mut [u64; 256] {
        // SAFETY: a reference to one field, borrowed from the guard: no other reference to
        // it can exist (nested hooks do not enter while the guard lives).
        unsafe { &mut (*self.ts).frames }
    }

    /// The raw state, for the few field accesses in this module.
    #[inline(always)]
    fn raw(&self) -> *mut ThreadState {
        self.ts
    }

    /// This thread's counter stripe as kept in TLS (1 + stripe), chosen by `next` on first use.
    #[inline(always)]
    pub fn stripe(&mut self, next: impl FnOnce() -> u32) -> u32 {
        // SAFETY: field access through the raw pointer while inside.
        unsafe {
            if (*self.raw()).stripe == 0 {
                (*self.raw()).stripe = next();
            }
            (*self.raw()).stripe
        }
    }

    /// The counters of this thread's exclusive stripe as kept in TLS, fetched by `fetch` while
    /// none is kept (see `Store::counters_from`).
    #[inline(always)]
    pub fn stripe_counters(
        &mut self,
        fetch: impl FnOnce() -> *mut core::ffi::c_void,
    ) -> *mut core::ffi::c_void {
        // SAFETY: field access through the raw pointer while inside.
        unsafe {
            if (*self.raw()).stripe_counters.is_null() {
                (*self.raw()).stripe_counters = fetch();
            }
            (*self.raw()).stripe_counters
        }
    }

    /// The counters of this thread's exclusive stripe if they are kept in TLS (else null).
    #[inline(always)]
    pub fn kept_stripe_counters(&self) -> *mut core::ffi::c_void {
        // SAFETY: a plain read of one field through the raw pointer while inside.
        unsafe { (*self.raw()).stripe_counters }
    }

    /// Replaces this thread's kept counter stripe (1 + stripe), forgetting its counters.
    pub fn set_stripe(&mut self, kept: u32) {
        // SAFETY: field writes through the raw pointer while inside.
        unsafe {
            (*self.raw()).stripe = kept;
            (*self.raw()).stripe_counters = core::ptr::null_mut();
        }
    }

    /// The known range of this thread's own stack.
    #[inline(always)]
    pub fn stack_bounds(&self) -> (usize, usize) {
        // SAFETY: plain reads of two fields.
        unsafe { ((*self.ts).stack_lo, (*self.ts).stack_hi) }
    }

    /// The per-thread unwinder cache slot.
    #[inline(always)]
    pub fn unwind_cache(&mut self) -> &mut *mut core::ffi::c_void {
        // SAFETY: a reference to one field, borrowed from the guard.
        unsafe { &mut (*self.ts).unwind_cache }
    }

    /// The cached clock for birth times: (ms, generation it was read in, countdown).
    #[inline(always)]
    pub fn clock(&mut self) -> (&mut u32, &mut u32, &mut u32) {
        // SAFETY: references to three distinct fields, borrowed from the guard.
        unsafe {
            let ts = self.ts;
            (
                &mut (*ts).clock_ms,
                &mut (*ts).clock_generation,
                &mut (*ts).clock_countdown,
            )
        }
    }
}

impl Drop for Inside {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: as in `enter`.
        unsafe { (*self.ts).depth -= 1 };
    }
}

/// Runs our own code (not reached from a hook) marked inside; nests.
pub fn as_inside<R>(f: impl FnOnce() -> R) -> R {
    let ts = thread_state_ptr();
    // SAFETY: depth is only touched through the raw pointer.
    unsafe { (*ts).depth += 1 };
    let r = f();
    // SAFETY: as above.
    unsafe { (*ts).depth -= 1 };
    r
}

/// Whether our own code is running on this thread.
#[inline(always)]
pub fn is_inside() -> bool {
    // SAFETY: a plain read of this thread's depth.
    unsafe { (*thread_state_ptr()).depth != 0 }
}

/// Marks this thread as ours for life (the dumper): every hook passes through on it.
pub fn enter_for_life() {
    // SAFETY: as above.
    unsafe {
        (*thread_state_ptr()).depth = 1;
        (*thread_state_ptr()).flags |= c_shim::THREAD_DUMPER;
    }
}

/// This thread's `THREAD_*` flags.
#[inline(always)]
pub fn flags() -> u32 {
    // SAFETY: a plain read of this thread's flags.
    unsafe { (*thread_state_ptr()).flags }
}

/// Sets `THREAD_*` flags on this thread.
pub fn set_flags(f: u32) {
    // SAFETY: a plain read-modify-write of this thread's flags (no reference held).
    unsafe { (*thread_state_ptr()).flags |= f };
}

/// Clears `THREAD_*` flags on this thread.
pub fn clear_flags(f: u32) {
    // SAFETY: a plain read-modify-write of this thread's flags (no reference held).
    unsafe { (*thread_state_ptr()).flags &= !f };
}

/// The sampler's per-thread fields: (initialised, countdown, rng), for the fast path that
/// runs before entering (it must touch nothing but these).
#[inline(always)]
pub fn sampler() -> *mut ThreadState {
    thread_state_ptr()
}

/// This thread's sampler starts over: its next allocation draws a fresh generator and gap.
pub fn restart_sampler() {
    // SAFETY: plain writes of two fields of this thread's own state.
    unsafe {
        (*thread_state_ptr()).initialised = 0;
        (*thread_state_ptr()).sample_countdown = 0;
    }
}

/// Sets the known range of this thread's stack.
pub fn set_stack_bounds(lo: usize, hi: usize) {
    // SAFETY: plain writes of two fields of this thread's state.
    unsafe {
        (*thread_state_ptr()).stack_lo = lo;
        (*thread_state_ptr()).stack_hi = hi;
    }
}

/// The top of this thread's side stack (0: none yet).
pub fn side_stack() -> usize {
    // SAFETY: a plain read of one field.
    unsafe { (*thread_state_ptr()).side_stack }
}

pub fn set_side_stack(top: usize) {
    // SAFETY: a plain write of one field.
    unsafe { (*thread_state_ptr()).side_stack = top };
}

/// Takes this thread's unwinder cache pointer (thread exit).
pub fn take_unwind_cache() -> *mut core::ffi::c_void {
    // SAFETY: a plain read and write of one field.
    unsafe {
        let p = (*thread_state_ptr()).unwind_cache;
        (*thread_state_ptr()).unwind_cache = core::ptr::null_mut();
        p
    }
}

/// This thread's reclamation slot for stack walks, 1-based (0: none claimed yet).
#[inline(always)]
pub fn walk_slot() -> u32 {
    // SAFETY: a plain read of one field of this thread's state.
    unsafe { (*thread_state_ptr()).walk_slot }
}

pub fn set_walk_slot(slot: u32) {
    // SAFETY: a plain write of one field of this thread's state.
    unsafe { (*thread_state_ptr()).walk_slot = slot };
}

/// This thread's slot in the thread registry, 1-based (0: not registered).
pub fn set_thread_slot(slot: u32) {
    // SAFETY: a plain write of one field of this thread's state.
    unsafe { (*thread_state_ptr()).thread_slot = slot };
}

/// Takes this thread's registry slot (thread exit, fork).
pub fn take_thread_slot() -> u32 {
    // SAFETY: a plain read and write of one field of this thread's state.
    unsafe {
        let s = (*thread_state_ptr()).thread_slot;
        (*thread_state_ptr()).thread_slot = 0;
        s
    }
}

/// This thread's registry slot (0: none).
pub fn thread_slot() -> u32 {
    // SAFETY: a plain read of one field of this thread's state.
    unsafe { (*thread_state_ptr()).thread_slot }
}

/// Takes this thread's kept counter stripe (1 + stripe; 0: none) at thread exit.
pub fn take_stripe() -> u32 {
    // SAFETY: a plain read and write of one field of this thread's state.
    unsafe {
        let s = (*thread_state_ptr()).stripe;
        (*thread_state_ptr()).stripe = 0;
        (*thread_state_ptr()).stripe_counters = core::ptr::null_mut();
        s
    }
}

/// This thread's kept counter stripe (1 + stripe; 0: none).
pub fn stripe_kept() -> u32 {
    // SAFETY: a plain read of one field of this thread's state.
    unsafe { (*thread_state_ptr()).stripe }
}
