//! Copy the live tables, then sort the copy into groups.
//!
//! The live table is copied one shard at a time (an allocating thread waits for at most one
//! shard's memcpy), then the per-stack counters (so a dump's counters and live rows are of
//! one moment), the interval table under its lock; then, with no lock held, the copy is
//! sorted by (stack, generation) so that every dump row is a contiguous run of it. The copy is
//! the only memory a dump needs in proportion to live allocations; everything after it works
//! run by run.

use crate::state::State;
use offheap_core::aggregate::{snapshot_key, widen_generation};
use offheap_core::stack::store::Store;
use offheap_core::table::intervals::Interval;
use offheap_core::table::live::{Record, SHARDS};
use offheap_core::table::Kind;
use offheap_format::Via;

/// One mapping of the interval table.
#[derive(Clone, Copy, Debug)]
pub struct Mapping {
    pub start: u64,
    pub iv: Interval,
}

impl Mapping {
    #[allow(clippy::len_without_is_empty)] // a mapping is never empty
    pub fn len(&self) -> u64 {
        self.iv.end - self.start
    }

    /// The dump row this mapping belongs to, then its generation: the sort key.
    pub fn key(&self, current_generation: u32) -> (u32, Kind, Via, u32) {
        (
            self.iv.birth.stack,
            self.iv.kind(),
            self.iv.via,
            widen_generation(self.iv.birth.generation, current_generation),
        )
    }
}

impl offheap_core::aggregate::Live for Mapping {
    fn size(&self) -> u64 {
        self.len()
    }
    fn birth_ms(&self) -> u32 {
        self.iv.birth.ms
    }
    fn generation(&self) -> u16 {
        self.iv.birth.generation
    }
    fn epoch(&self) -> u8 {
        self.iv.birth.epoch
    }
    fn sampled(&self) -> bool {
        false
    }
}

/// Per-stack counters since start, read from the stack store once, with the table: the
/// program goes on allocating while the dump is written, and every column must see the same
/// rows. (stack id, [allocs, frees, alloc bytes, free bytes])
pub struct Cumulative {
    pub rows: Vec<(u32, [u64; 4])>,
}

/// Stack ids summed at a time: a 512 KiB buffer, one pass over every stripe's counters for the
/// window.
const SUM_WINDOW: usize = 16384;

impl Cumulative {
    /// Summed a window of SUM_WINDOW ids at a time, with a bounded buffer (a failed
    /// allocation loses the rows from there on, not all of them).
    pub fn read(store: &Store) -> Self {
        let ids = store.id_limit() as usize;
        let mut rows = Vec::new();
        let mut window = Vec::new();
        if window.try_reserve_exact(SUM_WINDOW.min(ids)).is_err() {
            return Cumulative { rows };
        }
        for first in (0..ids).step_by(SUM_WINDOW) {
            window.clear();
            window.resize(SUM_WINDOW.min(ids - first), [0u64; 4]);
            store.sum_range(first, &mut window);
            for (i, sum) in window.iter().enumerate() {
                if sum[0] > 0 && rows.try_reserve(1).is_ok() {
                    rows.push(((first + i) as u32, *sum));
                }
            }
        }
        Cumulative { rows }
    }
}

pub struct Snapshot {
    pub uptime_ms: u64,
    /// The generation allocations were being born in (= this dump's seq).
    pub generation: u32,
    /// Live malloc-family records, sorted by (stack, generation).
    pub records: Vec<Record>,
    /// Mappings, sorted by (stack, kind, via, generation).
    pub mappings: Vec<Mapping>,
    /// Mappings in address order (for the ledger and the untracked scan).
    pub by_address: Vec<(u64, u64)>,
    /// Longest time one shard's lock was held: the worst stall this snapshot could cause.
    pub max_shard_hold_ns: u64,
    /// Every stack's cumulative counters, read right after the table: the reporter subtracts
    /// one dump's from the next to count a window's allocations, so they must be of the same
    /// moment as the live rows (read after the ledger, a slow first dump on a loaded machine
    /// saw 2 allocations in a window whose live rows grew by 47).
    pub cumulative: Cumulative,
    /// Bytes the copy takes.
    pub copy_bytes: usize,
}

pub fn take(st: &State, generation: u32) -> Snapshot {
    // A young child's records must be in the table we copy.
    st.close_young_log();
    let uptime_ms = st.uptime_ms();
    // Room for every shard at once (plus growth while we copy): growing the copy shard by
    // shard reallocates, and a reallocation holds the old and the new copy together.
    let room = st.live.total_capacity();
    let mut records: Vec<Record> = Vec::new();
    let _ = records.try_reserve_exact(room + room / 8);
    let mut max_hold = 0u64;
    for shard in 0..SHARDS {
        max_hold = max_hold.max(st.live.copy_shard(shard, &mut records));
    }
    let cumulative = Cumulative::read(&st.store);
    let mut mappings: Vec<Mapping> = {
        let map = st.intervals.lock();
        let mut v = Vec::new();
        if v.try_reserve_exact(map.len()).is_ok() {
            v.extend(map.iter().map(|(&start, iv)| Mapping { start, iv: *iv }));
        }
        v
    };
    let by_address: Vec<(u64, u64)> = mappings.iter().map(|m| (m.start, m.iv.end)).collect();
    records.sort_unstable_by_key(|r| snapshot_key(r, generation));
    mappings.sort_unstable_by_key(|m| m.key(generation));
    let copy_bytes = records.capacity() * core::mem::size_of::<Record>()
        + mappings.capacity() * core::mem::size_of::<Mapping>()
        + by_address.capacity() * 16;
    Snapshot {
        uptime_ms,
        generation,
        records,
        mappings,
        by_address,
        max_shard_hold_ns: max_hold,
        cumulative,
        copy_bytes,
    }
}
