//! Namespaces: `unshare` and `setns`, which some of their uses allow only a single-threaded
//! process (a new user namespace, `CLONE_THREAD`/`CLONE_SIGHAND`/`CLONE_VM`, joining a user
//! or mount namespace). A single-threaded program has a thread of ours only while a periodic
//! dump is written (`dump::dumper::start_for_one_dump`); these calls first wait for it to be
//! gone, so the program finds itself alone, as it is without us.

use core::ffi::c_int;
use core::sync::atomic::AtomicUsize;

use super::resolve_next as resolve;

static REAL_UNSHARE: AtomicUsize = AtomicUsize::new(0);
static REAL_SETNS: AtomicUsize = AtomicUsize::new(0);

/// `unshare` flags the kernel refuses (EINVAL) to a process with more than one thread.
const ALONE_ONLY: c_int =
    libc::CLONE_NEWUSER | libc::CLONE_THREAD | libc::CLONE_SIGHAND | libc::CLONE_VM;

/// Resolve the real functions early (constructor).
pub fn init() {
    resolve(&REAL_UNSHARE, c"unshare");
    resolve(&REAL_SETNS, c"setns");
}

/// # Safety
/// As for libc's unshare.
#[no_mangle]
pub unsafe extern "C" fn unshare(flags: c_int) -> c_int {
    if flags & ALONE_ONLY != 0 {
        crate::dump::dumper::let_the_program_be_alone();
    }
    let f = resolve(&REAL_UNSHARE, c"unshare");
    if f == 0 {
        offheap_core::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: libc's unshare with the caller's argument.
    unsafe { core::mem::transmute::<usize, unsafe extern "C" fn(c_int) -> c_int>(f)(flags) }
}

/// Every `setns` waits: the namespace type may be 0 ("whatever `fd` is"), and joining a user
/// or mount namespace needs the caller alone.
///
/// # Safety
/// As for libc's setns.
#[no_mangle]
pub unsafe extern "C" fn setns(fd: c_int, nstype: c_int) -> c_int {
    crate::dump::dumper::let_the_program_be_alone();
    let f = resolve(&REAL_SETNS, c"setns");
    if f == 0 {
        offheap_core::sys::set_errno(libc::ENOSYS);
        return -1;
    }
    // SAFETY: libc's setns with the caller's arguments.
    unsafe {
        core::mem::transmute::<usize, unsafe extern "C" fn(c_int, c_int) -> c_int>(f)(fd, nstype)
    }
}
