//! Facts about the process every layer may ask, and nothing that calls upward: who we are
//! (pid, a child without fork handlers), whether it is ending, whether a seccomp filter
//! forbids our system calls, and the per-thread cleanup key.
//!
//! These used to live in `lifecycle`, which made every module that needed a fact depend on
//! the composition root and the root on them: an import cycle. `lifecycle` now only puts
//! things together (constructor, fork handlers, destructors) and sets what is kept here.

use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

static THREAD_KEY: AtomicU32 = AtomicU32::new(u32::MAX);
static EXITING: AtomicBool = AtomicBool::new(false);
/// The main thread called pthread_exit: the process ends with its last other thread.
static MAIN_EXITED: AtomicBool = AtomicBool::new(false);
/// A seccomp filter reached every thread of the process.
static SANDBOXED: AtomicBool = AtomicBool::new(false);
/// Some process sharing this memory found it was a child without fork handlers. A hint
/// only: a vfork child writes it into its parent's memory, so it is never trusted without
/// asking the kernel (see `orphan_suspected`).
static ORPHAN_SEEN: AtomicBool = AtomicBool::new(false);
/// The pid our tables belong to (0 until the constructor ran); our fork handler sets the
/// child's. Kept here, not in the state, so that asking "am I an orphan?" needs nothing above
/// this module.
static TABLES_PID: AtomicU32 = AtomicU32::new(0);

pub fn tables_pid() -> u32 {
    TABLES_PID.load(Ordering::Relaxed)
}

pub fn set_tables_pid(pid: u32) {
    TABLES_PID.store(pid, Ordering::Relaxed);
}

/// The calling process's pid, from the kernel (glibc no longer caches it).
pub fn own_pid() -> u32 {
    offheap_core::raw_syscall!(libc::SYS_getpid) as u32
}

/// Whether this process is a child created without our fork handlers (its pid is not the
/// one the tables belong to).
pub fn orphaned() -> bool {
    let owner = tables_pid();
    let orphan = owner != 0 && owner != own_pid();
    if orphan {
        ORPHAN_SEEN.store(true, Ordering::Relaxed);
    }
    orphan
}

/// Whether an orphan was ever seen in this memory: then a waiter checks its pid at once
/// instead of after a millisecond of waiting, or a raw-clone child making many allocations
/// pays that millisecond (and far more on a loaded machine) on every one of them.
pub fn orphan_suspected() -> bool {
    ORPHAN_SEEN.load(Ordering::Relaxed)
}

/// 1 + the code of the last thread seen leaving: by `syscall(SYS_exit, code)`, or through
/// glibc (code 0, from our thread-exit destructor); 0: none yet.
static RAW_EXIT_CODE: AtomicU32 = AtomicU32::new(0);

/// A thread is leaving with `code` (the raw exit call's, or 0 through glibc).
pub fn note_raw_thread_exit(code: i32) {
    RAW_EXIT_CODE.store(1 + (code as u32 & 0xff), Ordering::Release);
}

/// The code the last thread seen leaving gave, if any was seen.
pub fn last_raw_exit_code() -> Option<i32> {
    RAW_EXIT_CODE
        .load(Ordering::Acquire)
        .checked_sub(1)
        .map(|c| c as i32)
}

pub fn exiting() -> bool {
    EXITING.load(Ordering::Relaxed)
}

pub fn set_exiting() {
    EXITING.store(true, Ordering::Relaxed);
}

pub fn main_exited() -> bool {
    MAIN_EXITED.load(Ordering::Relaxed)
}

pub fn set_main_exited() {
    MAIN_EXITED.store(true, Ordering::Relaxed);
}

#[inline(always)]
pub fn process_sandboxed() -> bool {
    SANDBOXED.load(Ordering::Relaxed)
}

pub fn set_process_sandboxed() {
    SANDBOXED.store(true, Ordering::Relaxed);
}

/// Whether the calling thread must make no system call of ours.
#[inline(always)]
pub fn sandboxed() -> bool {
    process_sandboxed() || crate::tls::flags() & c_shim::THREAD_SANDBOXED != 0
}

/// The pthread key whose destructor releases a thread's state of ours (set by lifecycle).
pub fn set_thread_key(key: u32) {
    THREAD_KEY.store(key, Ordering::Release);
}

/// The thread set up per-thread state of ours (an unwinder cache, a registry slot, a walk
/// slot, a side stack): make sure the key destructor runs at its exit.
pub fn thread_needs_cleanup() {
    let key = THREAD_KEY.load(Ordering::Acquire);
    if key != u32::MAX {
        // SAFETY: key was created by pthread_key_create; any non-null value makes the
        // destructor run; keys below 32 never allocate.
        unsafe {
            libc::pthread_setspecific(key, core::ptr::NonNull::<u8>::dangling().as_ptr().cast())
        };
    }
}
