//! Seccomp: knowing when a thread of the program has put itself in a sandbox.
//!
//! A program that installs a seccomp filter (chromium's renderers, sandboxed workers) may
//! kill itself with SIGSYS at the first system call the filter does not expect. Hooks run on
//! the program's threads, so from the moment a thread installs a filter, our code on it makes
//! no system call of its own: its allocations go untracked (table growth, stack-cache set-up
//! and dumps all need system calls), frees still leave the table, and it writes no exit dump.
//! Threads it creates later inherit the filter and the flag. A filter synchronised to every
//! thread (`SECCOMP_FILTER_FLAG_TSYNC`) reaches our own dumper too: it then stops.
//!
//! Filters are installed through `prctl(PR_SET_SECCOMP, …)` or `syscall(SYS_seccomp, …)`
//! (glibc has no seccomp() wrapper; libseccomp uses syscall()): both are interposed here.
//! A filter the process inherited when it started (containers, systemd) is an environment's
//! policy, not the program's: it is not treated as a sandbox (see README).

use core::ffi::{c_int, c_long, c_ulong};
use core::sync::atomic::AtomicUsize;

const SECCOMP_SET_MODE_STRICT: c_long = 0;
const SECCOMP_SET_MODE_FILTER: c_long = 1;
const SECCOMP_FILTER_FLAG_TSYNC: c_long = 1;
const SECCOMP_MODE_STRICT: c_ulong = 1;
const SECCOMP_MODE_FILTER: c_ulong = 2;

fn entering_sandbox(all_threads: bool) {
    crate::tls::set_flags(c_shim::THREAD_SANDBOXED);
    if all_threads {
        crate::process::set_process_sandboxed();
    }
}

static REAL_SYSCALL: AtomicUsize = AtomicUsize::new(0);
static REAL_PRCTL: AtomicUsize = AtomicUsize::new(0);

type SyscallFn =
    unsafe extern "C" fn(c_long, c_long, c_long, c_long, c_long, c_long, c_long) -> c_long;
type PrctlFn = unsafe extern "C" fn(c_int, c_ulong, c_ulong, c_ulong, c_ulong) -> c_int;

use super::resolve_next as resolve;

/// Resolve the real functions early (constructor).
pub fn init() {
    resolve(&REAL_SYSCALL, c"syscall");
    resolve(&REAL_PRCTL, c"prctl");
}

/// libc's `syscall(number, ...)`. A variadic caller passes up to six more arguments in the
/// same registers and stack slot as these named ones, so declaring them all is sound (the
/// unused ones are whatever the registers held, as in libc's own implementation).
///
/// # Safety
/// As for libc's syscall.
#[no_mangle]
pub unsafe extern "C" fn syscall(
    number: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    if number == libc::SYS_seccomp
        && (a1 == SECCOMP_SET_MODE_FILTER || a1 == SECCOMP_SET_MODE_STRICT)
    {
        entering_sandbox(a1 == SECCOMP_SET_MODE_FILTER && a2 & SECCOMP_FILTER_FLAG_TSYNC != 0);
    }
    if number == libc::SYS_prctl && a1 == libc::PR_SET_SECCOMP as c_long {
        entering_sandbox(false);
    }
    if number == libc::SYS_exit {
        // A thread leaving by the raw call (the way out of strict seccomp): should it be the
        // program's last, the process's status is this code (`dump::dumper::program_gone`).
        crate::process::note_raw_thread_exit(a1 as i32);
    }
    let f = resolve(&REAL_SYSCALL, c"syscall");
    if f == 0 {
        offheap_core::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: libc's syscall with the caller's arguments.
    unsafe { core::mem::transmute::<usize, SyscallFn>(f)(number, a1, a2, a3, a4, a5, a6) }
}

/// libc's `prctl(option, ...)` (variadic like syscall: see there).
///
/// # Safety
/// As for libc's prctl.
#[no_mangle]
pub unsafe extern "C" fn prctl(
    option: c_int,
    a2: c_ulong,
    a3: c_ulong,
    a4: c_ulong,
    a5: c_ulong,
) -> c_int {
    if option == libc::PR_SET_SECCOMP && (a2 == SECCOMP_MODE_FILTER || a2 == SECCOMP_MODE_STRICT) {
        entering_sandbox(false);
    }
    let f = resolve(&REAL_PRCTL, c"prctl");
    if f == 0 {
        offheap_core::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: libc's prctl with the caller's arguments.
    unsafe { core::mem::transmute::<usize, PrctlFn>(f)(option, a2, a3, a4, a5) }
}
