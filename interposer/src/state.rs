//! The process-wide tracking state, published once the constructor has set it up.
//!
//! Hooks load one pointer: null means "not tracking" (before our constructor, after a bad
//! configuration, under secure execution), and they pass straight through.

use crate::config::Config;
use core::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering,
};
use offheap_core::stack::store::Store;
use offheap_core::table::intervals::Intervals;
use offheap_core::table::live::LiveTable;
use offheap_core::threads::ThreadRegistry;

pub struct State {
    pub config: &'static Config,
    pub live: LiveTable,
    pub intervals: Intervals,
    pub store: Store,
    pub threads: ThreadRegistry,
    /// Monotonic ms at start; birth times are relative to it.
    pub start_ms: u64,
    pub start_wall_ns: u64,
    /// Generation of allocations born now (= seq of the next dump).
    pub generation: AtomicU32,
    pub epoch: AtomicU8,
    /// Counting filter of sampled block addresses (sampling mode only): an unsampled free
    /// costs one load of a 16 KiB table that stays in cache. Counters saturate instead of
    /// wrapping, so a sampled block is never forgotten (a saturated slot just sends every
    /// free that maps to it to the table).
    pub sample_filter: *const AtomicU16,
    pub sample_filter_mask: usize,
    /// Records we could not store (our own table out of memory, or a lock that would never
    /// come free in a child created without fork handlers).
    pub lost_records: AtomicU64,
    /// The pid the tables belong to (updated by our fork handler in a child).
    pub pid: AtomicU32,
    /// Uptime (ms) at which the next periodic dump is due (u64::MAX: none).
    pub next_due_ms: AtomicU64,
    /// A forked child: uptime (ms) at which it was born, else u64::MAX.
    pub child_born_ms: AtomicU64,
    /// A dump is being started on behalf of a single-threaded program (one at a time).
    pub dump_starting: AtomicBool,
}

// SAFETY: sample_filter points at a mapping that lives for the whole process and is only
// accessed through atomics.
unsafe impl Sync for State {}
// SAFETY: as above.
unsafe impl Send for State {}

static STATE: AtomicPtr<State> = AtomicPtr::new(core::ptr::null_mut());

#[inline(always)]
pub fn get() -> Option<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: the state is leaked on publication and never freed.
    unsafe { p.as_ref() }
}

pub fn publish(state: Box<State>) {
    STATE.store(Box::into_raw(state), Ordering::Release);
}

/// Saturating add on a sampling-filter counter.
fn bump(slot: &AtomicU16, up: bool) {
    let _ = slot.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| match (up, v) {
        (_, u16::MAX) => None, // saturated: stays, never wraps or forgets
        (true, v) => Some(v + 1),
        (false, 0) => None,
        (false, v) => Some(v - 1),
    });
}

impl State {
    #[inline(always)]
    pub fn filter_slot(&self, addr: u64) -> Option<&AtomicU16> {
        if self.sample_filter.is_null() {
            return None;
        }
        let i = ((addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
            & self.sample_filter_mask;
        // SAFETY: i <= mask and the filter mapping has mask + 1 counters.
        Some(unsafe { &*self.sample_filter.add(i) })
    }

    /// Whether a block at `addr` may be a sampled one (false: certainly not).
    #[inline(always)]
    pub fn maybe_sampled(&self, addr: u64) -> bool {
        self.filter_slot(addr)
            .is_none_or(|s| s.load(Ordering::Relaxed) != 0)
    }

    pub fn note_sampled(&self, addr: u64, live: bool) {
        if let Some(s) = self.filter_slot(addr) {
            bump(s, live);
        }
    }

    /// Uptime in ms, from the coarse clock.
    pub fn uptime_ms(&self) -> u64 {
        offheap_core::sys::coarse_ms().saturating_sub(self.start_ms)
    }
}
