//! The process-wide tracking state, published once the constructor has set it up.
//!
//! Hooks load one pointer: null means "not tracking" (before our constructor, after a bad
//! configuration, under secure execution), and they pass straight through. The free hook
//! reads the sampling filter instead, a static that says "certainly untracked" for every
//! block until the state is published.

use crate::config::Config;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};
use offheap_core::sampling::Filter;
use offheap_core::stack::store::Store;
use offheap_core::table::intervals::Intervals;
use offheap_core::table::live::{Inserted, LiveTable, Slot, FLAG_SAMPLED};
use offheap_core::table::young::YoungLog;
use offheap_core::table::Birth;
use offheap_core::threads::ThreadRegistry;

pub struct State {
    pub config: &'static Config,
    pub live: LiveTable,
    /// A young forked child's blocks, before they go into `live` (see `table::young`).
    pub young: YoungLog,
    pub intervals: Intervals,
    pub store: Store,
    pub threads: ThreadRegistry,
    /// Monotonic ms at start; birth times are relative to it.
    pub start_ms: u64,
    pub start_wall_ns: u64,
    /// Generation of allocations born now (= seq of the next dump).
    pub generation: AtomicU32,
    pub epoch: AtomicU8,
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
    /// The soft RLIMIT_AS at start-up, when finite (it sized the stack store).
    pub address_limit: Option<u64>,
}

fn slot_of(addr: u64, size: u64, birth: &Birth) -> Slot {
    Slot {
        addr,
        size,
        stack: birth.stack,
        generation: birth.generation,
        epoch: birth.epoch,
        flags: if birth.sampled { FLAG_SAMPLED } else { 0 },
        birth_ms: birth.ms,
    }
}

static STATE: AtomicPtr<State> = AtomicPtr::new(core::ptr::null_mut());

/// Slots of the sampling filter per group: a thread's frees read its arena's group, 2 KiB of
/// bits, small enough to stay in L1 next to the allocator's own data, while the sampled blocks
/// alive at a time in one 64 MiB window (one per 512 KiB live at the usual rate: 128 in a full
/// window) keep false positives, which only cost a table lookup, rare (1 % at 160).
const FILTER_WORDS: usize = (1 << 14) / 64;

/// Groups of the sampling filter, as many as the live table has (`live::GROUP_BITS`): threads
/// whose arenas fall in different groups never write a line the other reads. Their counters
/// are 32 KiB a group, in zero pages until a sample is noted in it.
const FILTER_GROUPS: usize = 1 << offheap_core::table::live::GROUP_BITS;

/// Which freed blocks may have a record. A static, so the free hook reads it without loading
/// the state first: empty until the state is published (nothing is tracked: every free
/// passes through), then saying "maybe" everywhere for full tracking (`maybe_everywhere`,
/// set before publication) or kept by sampled births and frees.
pub static SAMPLE_FILTER: SampleFilter = Filter::new();
/// The sampled-block filter's type (its geometry is read by the assembly `free`).
pub type SampleFilter = Filter<FILTER_GROUPS, FILTER_WORDS>;

#[inline(always)]
pub fn get() -> Option<&'static State> {
    let p = STATE.load(Ordering::Acquire);
    // SAFETY: the state is leaked on publication and never freed.
    unsafe { p.as_ref() }
}

pub fn publish(state: Box<State>) {
    STATE.store(Box::into_raw(state), Ordering::Release);
}

/// The constructor ended without publishing a state (a bad configuration, secure execution,
/// no memory for the tables): nothing will ever be tracked in this process.
static INERT: AtomicBool = AtomicBool::new(false);

pub fn declare_inert() {
    INERT.store(true, Ordering::Release);
}

/// Whether the library is inert for good (false before the constructor has decided).
pub fn inert() -> bool {
    INERT.load(Ordering::Acquire)
}

impl State {
    /// A new block's record: in the young log while this is a young child, else the table.
    #[inline(always)]
    pub fn insert_record(&self, addr: u64, size: u64, birth: Birth) -> Inserted {
        if self.young.is_open() && self.young.record(&slot_of(addr, size, &birth)) {
            return Inserted::New;
        }
        self.live.insert(addr, size, birth)
    }

    /// The record of a block being released, removed from wherever it is.
    #[inline(always)]
    pub fn remove_record(&self, addr: u64) -> Option<Slot> {
        if self.young.is_open() {
            if let Some(s) = self.young.take(addr) {
                return Some(s);
            }
        }
        self.live.remove(addr)
    }

    /// The child grew up, or a dump needs every record where it looks: the young log's records
    /// move into the table.
    pub fn close_young_log(&self) {
        self.young.close(|s| {
            let birth = Birth {
                stack: s.stack,
                generation: s.generation,
                epoch: s.epoch,
                ms: s.birth_ms,
                sampled: s.flags & FLAG_SAMPLED != 0,
            };
            if let Inserted::Lost = self.live.insert(s.addr, s.size, birth) {
                self.lost_records.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    pub fn note_sampled(&self, addr: u64, live: bool) {
        SAMPLE_FILTER.note(addr, live);
    }

    /// Uptime in ms, from the coarse clock.
    pub fn uptime_ms(&self) -> u64 {
        offheap_core::sys::coarse_ms().saturating_sub(self.start_ms)
    }
}
