//! dlopen/dlclose: keep the unwinder's module set in step with the loader.
//!
//! After dlopen the set is rebuilt, outside the loader's lock. Before dlclose may unmap an
//! image, no stack walk may still be able to read its unwind tables: the close unpublishes
//! every dlopened image first and waits for the walks in flight (`stack::modules` explains
//! the protocol); a walk that does not end within [`CLOSE_WAIT_NS`] (a stopped thread) hands
//! the real dlclose to the dumper thread, and the program's call returns 0 at once.
//! RTLD_DEEPBIND is dropped (as heaptrack does): a deep-bound library would bind its own
//! malloc calls past our interposed symbols and its blocks would be freed behind our back.

use crate::stack::modules::{self, CloseWait};
use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::AtomicUsize;

static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

type DlOpen = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
type DlClose = unsafe extern "C" fn(*mut c_void) -> c_int;

use super::resolve_next as resolve;

/// Resolve the real functions early (constructor), while nothing else is going on.
pub fn init() {
    resolve(&REAL_DLOPEN, c"dlopen");
    resolve(&REAL_DLCLOSE, c"dlclose");
}

/// How long a dlclose waits for walks in flight before the dumper takes the close over.
pub const CLOSE_WAIT_NS: u64 = 50_000_000;

fn after_change() {
    if crate::state::get().is_some() {
        let errno = offheap_core::sys::ErrnoGuard::save();
        crate::tls::as_inside(crate::stack::modules::rebuild);
        drop(errno);
    }
}

/// # Safety
/// As for libc's dlopen.
#[no_mangle]
pub unsafe extern "C" fn dlopen(file: *const c_char, mut mode: c_int) -> *mut c_void {
    let f = resolve(&REAL_DLOPEN, c"dlopen");
    if f == 0 {
        return core::ptr::null_mut();
    }
    if mode & libc::RTLD_DEEPBIND != 0 {
        crate::verbose!(
            "dropping RTLD_DEEPBIND from dlopen: a deep-bound library would bypass the hooks"
        );
        mode &= !libc::RTLD_DEEPBIND;
    }
    // SAFETY: f is libc's dlopen.
    let h = unsafe { core::mem::transmute::<usize, DlOpen>(f)(file, mode) };
    if !h.is_null() {
        after_change();
    }
    h
}

/// # Safety
/// As for libc's dlclose.
#[no_mangle]
pub unsafe extern "C" fn dlclose(handle: *mut c_void) -> c_int {
    let f = resolve(&REAL_DLCLOSE, c"dlclose");
    if f == 0 {
        return -1;
    }
    // SAFETY: f is libc's dlclose.
    let real = |h| unsafe { core::mem::transmute::<usize, DlClose>(f)(h) };
    if crate::state::get().is_none() || handle.is_null() {
        return real(handle);
    }
    let errno = offheap_core::sys::ErrnoGuard::save();
    let Some(retired) = crate::tls::as_inside(modules::close_begin) else {
        drop(errno);
        return real(handle);
    };
    let budget = if crate::dump::dumper::resident() {
        CLOSE_WAIT_NS
    } else {
        // Nobody to hand the close to: wait for the walks in flight, however long.
        u64::MAX
    };
    match crate::tls::as_inside(|| modules::close_wait(retired, budget)) {
        CloseWait::Now => {
            drop(errno);
            let rc = real(handle);
            let errno = offheap_core::sys::ErrnoGuard::save();
            crate::tls::as_inside(modules::close_end);
            drop(errno);
            rc
        }
        CloseWait::Later => {
            crate::tls::as_inside(|| modules::defer_close(handle as usize, f, retired));
            crate::verbose!("a stack walk is in flight: the dumper thread will unload the library");
            drop(errno);
            0
        }
    }
}
