//! dlopen/dlclose: keep the unwinder's module set in step with the loader.
//!
//! The set is rebuilt after the real call returns, outside the loader's lock. RTLD_DEEPBIND
//! is dropped (as heaptrack does): a deep-bound library would bind its own malloc calls past
//! our interposed symbols and its blocks would be freed behind our back.

use core::ffi::{c_char, c_int, c_void};
use core::sync::atomic::{AtomicUsize, Ordering};

static REAL_DLOPEN: AtomicUsize = AtomicUsize::new(0);
static REAL_DLCLOSE: AtomicUsize = AtomicUsize::new(0);

type DlOpen = unsafe extern "C" fn(*const c_char, c_int) -> *mut c_void;
type DlClose = unsafe extern "C" fn(*mut c_void) -> c_int;

fn resolve(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
    let mut f = slot.load(Ordering::Acquire);
    if f == 0 {
        f = crate::tls::as_inside(|| {
            // SAFETY: dlsym with a NUL-terminated name; RTLD_NEXT finds libc's definition.
            unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr()) as usize }
        });
        slot.store(f, Ordering::Release);
    }
    f
}

/// Resolve the real functions early (constructor), while nothing else is going on.
pub fn init() {
    resolve(&REAL_DLOPEN, c"dlopen");
    resolve(&REAL_DLCLOSE, c"dlclose");
}

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
    let rc = unsafe { core::mem::transmute::<usize, DlClose>(f)(handle) };
    after_change();
    rc
}
