//! What the probes found, for the rest of the library to read: whether any probe is on, the
//! dump header's Go section, and the text pages patched. Kept apart from the probes
//! themselves so that the dump writer can read these without depending on the probe entry
//! points (which call the dump's exit path).

use offheap_core::sync::SpinLock;
use offheap_format::schema::GoInfo;
use std::sync::atomic::{AtomicBool, Ordering};

static ACTIVE: AtomicBool = AtomicBool::new(false);
static INFO: SpinLock<Option<GoInfo>> = SpinLock::new(None);
/// Text pages we patched (each became a private copy: resident memory of ours); 0 = none.
static PATCHED: SpinLock<[u64; 3]> = SpinLock::new([0; 3]);

/// Whether any probe is on (threads then get their side stack when they start: the probes
/// switch to it from Go stacks, where nothing may be allocated).
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

pub fn set_active() {
    ACTIVE.store(true, Ordering::Relaxed);
}

/// What the dump header says about Go: None for other programs.
pub fn go_info() -> Option<GoInfo> {
    INFO.lock().clone()
}

pub fn set_go_info(info: GoInfo) {
    *INFO.lock() = Some(info);
}

/// Text pages the probes patched.
pub fn patched_pages() -> Vec<u64> {
    PATCHED.lock().iter().copied().filter(|&p| p != 0).collect()
}

pub fn set_patched_pages(pages: &[u64; 3]) {
    *PATCHED.lock() = *pages;
}
