//! Dumps: copy the live tables (`snapshot`), add the kernel's view (`procfs`, `ledger`),
//! serialise and write atomically (`writer`, `files`; the rows come from `rows`), once
//! `headroom` says the process has room for it; the
//! `dumper` thread decides when, `control` lets `offheap snapshot|mark <pid>` ask for one, and
//! `exit` writes the last one as the process ends. Format: the `offheap-format` crate,
//! docs/dump-format.md.

pub mod control;
pub mod dumper;
pub mod exit;
pub mod files;
pub mod headroom;
pub mod ledger;
pub mod procfs;
pub mod rows;
pub mod snapshot;
pub mod writer;

/// While alive, the calling thread's cancellation is disabled (and restored on drop).
///
/// A dump written on a program thread (the exit dump, `OFFHEAP_THREAD=never`) calls
/// cancellation points (`open`, `write`, `fsync`, `connect`, `pthread_join`): a thread with
/// a deferred cancel pending that called `exit` was cancelled inside our dump instead of
/// exiting with its status (SIGSEGV, or "cancelled" to its joiner, in a host-invisibility
/// sweep). With cancellation disabled here, a pending cancel waits for the program's own
/// next cancellation point, as it would without us.
pub struct NoCancellation(i32);

// Not in the `libc` crate: glibc's <pthread.h> (`PTHREAD_CANCEL_ENABLE` 0, `_DISABLE` 1).
const PTHREAD_CANCEL_ENABLE: i32 = 0;
const PTHREAD_CANCEL_DISABLE: i32 = 1;
extern "C" {
    fn pthread_setcancelstate(state: i32, oldstate: *mut i32) -> i32;
}

impl NoCancellation {
    pub fn new() -> NoCancellation {
        let mut old = PTHREAD_CANCEL_ENABLE;
        // SAFETY: sets this thread's cancel state; `old` is a valid out-pointer.
        unsafe { pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &mut old) };
        NoCancellation(old)
    }
}

impl Default for NoCancellation {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NoCancellation {
    fn drop(&mut self) {
        let mut ignored = 0;
        // SAFETY: restores the state `new` saved; `ignored` is a valid out-pointer.
        unsafe { pthread_setcancelstate(self.0, &mut ignored) };
    }
}

/// While alive, SIGXFSZ is blocked on the calling thread; on drop, one that our writes raised
/// is taken back (it was not pending before) and the mask restored.
///
/// Under `ulimit -f` a dump's write past the limit raises SIGXFSZ, whose default action
/// kills the process: `/bin/echo hi` under `ulimit -f 2` died with status 153 when its exit
/// dump was written. Blocked, the write fails with EFBIG instead and the dump is abandoned
/// (its temporary file removed).
pub struct NoFileSizeSignal {
    old: libc::sigset_t,
    pending_before: bool,
}

impl NoFileSizeSignal {
    pub fn new() -> NoFileSizeSignal {
        // SAFETY: sigset_t is plain data, all-zero valid before the calls fill it; every
        // pointer is to a local.
        unsafe {
            let mut block: libc::sigset_t = core::mem::zeroed();
            let mut old: libc::sigset_t = core::mem::zeroed();
            libc::sigemptyset(&mut block);
            libc::sigaddset(&mut block, libc::SIGXFSZ);
            libc::pthread_sigmask(libc::SIG_BLOCK, &block, &mut old);
            NoFileSizeSignal {
                old,
                pending_before: xfsz_pending(),
            }
        }
    }
}

impl Default for NoFileSizeSignal {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether SIGXFSZ is pending for this thread or the process.
fn xfsz_pending() -> bool {
    // SAFETY: as in `new`.
    unsafe {
        let mut pending: libc::sigset_t = core::mem::zeroed();
        libc::sigpending(&mut pending);
        libc::sigismember(&pending, libc::SIGXFSZ) == 1
    }
}

impl Drop for NoFileSizeSignal {
    fn drop(&mut self) {
        // SAFETY: as in `new`; the zero timeout makes sigtimedwait take a pending SIGXFSZ or
        // return at once.
        unsafe {
            if !self.pending_before && xfsz_pending() {
                let mut only: libc::sigset_t = core::mem::zeroed();
                libc::sigemptyset(&mut only);
                libc::sigaddset(&mut only, libc::SIGXFSZ);
                let zero = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                };
                libc::sigtimedwait(&only, core::ptr::null_mut(), &zero);
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, core::ptr::null_mut());
        }
    }
}
