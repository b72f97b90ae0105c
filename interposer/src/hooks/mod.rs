//! The interposed symbols. Each hook calls the real function and tells the tracking core
//! (`crate::track`) what happened; none of them knows how tracking works.

#[cfg(target_arch = "x86_64")]
pub mod direct;
pub mod dl;
pub mod exit;
pub mod malloc;
pub mod mmap;
pub mod ns;
pub mod real;
pub mod sandbox;
pub mod thread;

use core::sync::atomic::{AtomicUsize, Ordering};

/// The next definition of `name` after ours (libc's), looked up once and kept in `slot`.
fn resolve_next(slot: &AtomicUsize, name: &core::ffi::CStr) -> usize {
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
