//! Rust view of the C half of liboffheap: the initial-exec per-thread state.
//!
//! The hot path reads this state on every hook, so it must cost one TLS load and never
//! allocate; `c/thread_state.c` explains why it lives in C.
#![no_std]

/// Mirror of `struct offheap_thread` in `c/thread_state.c`; field order and types must match.
#[repr(C)]
pub struct ThreadState {
    pub busy: i32,
    pub initialised: i32,
    pub stripe: u32,
    pub reserved: u32,
    pub sample_countdown: i64,
    pub rng: u64,
    pub stack_lo: usize,
    pub stack_hi: usize,
    pub unwind_cache: *mut core::ffi::c_void,
    pub frames: [u64; 256],
}

extern "C" {
    fn offheap_thread_state() -> *mut ThreadState;
}

/// The calling thread's state.
///
/// Valid for the whole life of the thread; only the thread itself may touch it, so the
/// returned reference must not be sent to another thread.
#[inline(always)]
pub fn thread_state() -> &'static mut ThreadState {
    // SAFETY: the C accessor returns the address of this thread's zero-initialised TLS
    // struct, which lives as long as the thread and is only reached through this function
    // from the owning thread; callers never hold two of these references across a call that
    // could re-enter (the busy counter is the only field touched by re-entrant paths).
    unsafe { &mut *offheap_thread_state() }
}
