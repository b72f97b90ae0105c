//! The process-wide tracking state, published once the constructor has set it up.
//!
//! Hooks load one pointer: null means "not tracking" (before our constructor, after a bad
//! configuration, under secure execution), and they pass straight through.

use crate::config::Config;
use core::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use offheap_core::stack::store::Store;
use offheap_core::table::intervals::Intervals;
use offheap_core::table::live::LiveTable;
use offheap_core::table::Birth;

pub struct State {
    pub config: &'static Config,
    pub live: LiveTable,
    pub intervals: Intervals,
    pub store: Store,
    /// Monotonic ms at start; birth times are relative to it.
    pub start_ms: u64,
    pub start_mono_ns: u64,
    pub start_wall_ns: u64,
    /// Generation of allocations born now (= seq of the next dump).
    pub generation: AtomicU32,
    pub epoch: AtomicU8,
    /// Counting filter of sampled block addresses (sampling mode only): an unsampled free
    /// costs one byte load.
    pub sample_filter: *const AtomicU8,
    pub sample_filter_mask: usize,
    /// Records we could not store (our own table out of memory).
    pub lost_records: AtomicU64,
    pub pid: AtomicU32,
    /// Uptime in ms as last published by the dumper thread (every 100 ms): birth times read
    /// this instead of a clock, which keeps a system call or vDSO read off the hot path.
    pub clock_ms: AtomicU32,
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

impl State {
    #[inline(always)]
    pub fn birth(&self, stack: u32, sampled: bool) -> Birth {
        Birth {
            stack,
            generation: self.generation.load(Ordering::Relaxed) as u16,
            epoch: self.epoch.load(Ordering::Relaxed),
            ms: self.clock_ms.load(Ordering::Relaxed),
            sampled,
        }
    }

    #[inline(always)]
    pub fn filter_slot(&self, addr: u64) -> &AtomicU8 {
        let i = ((addr >> 4).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize
            & self.sample_filter_mask;
        // SAFETY: i <= mask and the filter mapping has mask + 1 bytes.
        unsafe { &*self.sample_filter.add(i) }
    }

    /// Current uptime; also publishes it for birth times.
    pub fn uptime_ms(&self) -> u64 {
        let now = offheap_core::sys::coarse_ms().saturating_sub(self.start_ms);
        self.clock_ms.store(now as u32, Ordering::Relaxed);
        now
    }
}
