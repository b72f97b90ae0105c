//! The process-wide tracking state, published once the constructor has set it up.
//!
//! Hooks load one pointer: null means "not tracking" (before our constructor, after a bad
//! configuration, under secure execution), and they pass straight through.

use crate::config::Config;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use offheap_core::sampling::Filter;
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
    /// Which freed blocks may be sampled ones (sampling mode; `Filter::none()` otherwise).
    pub sample_filter: Filter,
    /// Records we could not store (our own table out of memory, or a lock that would never
    /// come free in a child created without fork handlers).
    pub lost_records: AtomicU64,
    /// Uptime (ms) at which the next periodic dump is due (u64::MAX: none).
    pub next_due_ms: AtomicU64,
    /// A forked child: uptime (ms) at which it was born, else u64::MAX.
    pub child_born_ms: AtomicU64,
    /// A forked child captures no stacks before this uptime (0: no such wait, or it is over):
    /// see `track::stack_id`.
    pub stacks_from_ms: AtomicU64,
    /// A dump is being started on behalf of a single-threaded program (one at a time).
    pub dump_starting: AtomicBool,
}

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
    /// Whether a block at `addr` may be a sampled one (false: certainly not).
    #[inline(always)]
    pub fn maybe_sampled(&self, addr: u64) -> bool {
        self.sample_filter.maybe_sampled(addr)
    }

    pub fn note_sampled(&self, addr: u64, live: bool) {
        self.sample_filter.note(addr, live);
    }

    /// Uptime in ms, from the coarse clock.
    pub fn uptime_ms(&self) -> u64 {
        offheap_core::sys::coarse_ms().saturating_sub(self.start_ms)
    }
}
