//! Rust view of the C half of liboffheap: the initial-exec per-thread state.
//!
//! The hot path reads this state on every hook, so it must cost one address computation and
//! never allocate; `c/thread_state.c` explains why it lives in C. This crate hands out a raw
//! pointer only: the interposer's `tls` module is the one place that turns it into
//! references, behind a guard that cannot alias.
#![no_std]

/// Mirror of `struct offheap_thread` in `c/thread_state.c`; field order and types must match.
#[repr(C)]
pub struct ThreadState {
    pub depth: i32,
    pub initialised: i32,
    pub stripe: u32,
    pub flags: u32,
    pub sample_countdown: u64,
    pub rng: u64,
    pub stack_lo: usize,
    pub stack_hi: usize,
    pub unwind_cache: *mut core::ffi::c_void,
    pub side_stack: usize,
    pub clock_ms: u32,
    pub clock_generation: u32,
    pub clock_countdown: u32,
    pub thread_slot: u32,
    pub walk_slot: u32,
    pub reserved: u32,
    pub stripe_counters: *mut core::ffi::c_void,
    pub frames: [u64; 256],
}

/// The thread installed (or inherited) a seccomp filter: make no system call of ours here.
pub const THREAD_SANDBOXED: u32 = 1;
/// This is the library's own dumper thread.
pub const THREAD_DUMPER: u32 = 2;
/// This is the process's main thread.
pub const THREAD_MAIN: u32 = 4;
/// This thread already parked once in a walk (the OFFHEAP_TEST_PARK testing aid).
pub const THREAD_PARKED: u32 = 8;
/// This thread is forking: between our atfork prepare handler and our parent/child handler
/// (other libraries' handlers that run meanwhile are written down, not tracked at once).
pub const THREAD_FORKING: u32 = 16;

extern "C" {
    fn offheap_thread_state() -> *mut ThreadState;
    static offheap_thread_state_size: core::ffi::c_ulong;
}

/// Whether the Rust mirror has the C struct's size (a field added on one side only would
/// make every hook read the wrong bytes): checked once by the constructor.
pub fn layout_matches() -> bool {
    // SAFETY: a constant the C half defines.
    let c_size = unsafe { offheap_thread_state_size } as usize;
    c_size == core::mem::size_of::<ThreadState>()
}

/// The calling thread's state: valid for the whole life of the thread, zero-initialised,
/// only ever touched by the thread itself.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn thread_state_ptr() -> *mut ThreadState {
    let p: *mut ThreadState;
    // SAFETY: the initial-exec TLS sequence the C compiler would emit: the variable's offset
    // from the thread pointer comes from the GOT (an R_X86_64_TPOFF64 the loader resolved),
    // and %fs:0 holds the thread pointer itself. Reads only; no memory is written.
    unsafe {
        core::arch::asm!(
            "mov {p}, qword ptr fs:[0]",
            "add {p}, qword ptr [rip + offheap_tls@GOTTPOFF]",
            p = out(reg) p,
            options(pure, readonly, nostack),
        );
    }
    p
}

/// The calling thread's state (through the C accessor where the inline sequence is not
/// written).
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub fn thread_state_ptr() -> *mut ThreadState {
    // SAFETY: the C accessor returns the address of this thread's TLS struct.
    unsafe { offheap_thread_state() }
}

/// The C accessor, to check the inline sequence against (tests, start-up).
pub fn thread_state_ptr_via_c() -> *mut ThreadState {
    // SAFETY: the C accessor returns the address of this thread's TLS struct.
    unsafe { offheap_thread_state() }
}
