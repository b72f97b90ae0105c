//! Copy the live tables into an aggregated, self-contained snapshot.
//!
//! The live table is copied one shard at a time (an allocating thread waits for at most one
//! shard's copy); aggregation by (stack, kind) happens afterwards with no lock held, so dump
//! size grows with distinct stacks, not with live allocations.

use crate::state::State;
use offheap_core::table::intervals::Interval;
use offheap_core::table::live::{Slot, FLAG_SAMPLED, SHARDS};
use offheap_core::table::Kind;
use std::collections::{BTreeMap, HashMap};

pub const AGE_BUCKETS_MS: [u64; 5] = [1_000, 10_000, 60_000, 600_000, 3_600_000];
const MAX_GENERATION_ROWS: usize = 64;

#[derive(Default, Debug, Clone)]
pub struct Aggregate {
    pub count: u64,
    pub bytes: u64,
    pub est_count: f64,
    pub est_bytes: f64,
    pub oldest_ms: u64,
    pub newest_ms: u64,
    pub age_hist: [u64; 6],
    pub by_generation: BTreeMap<u32, (u64, u64)>,
    pub by_epoch: BTreeMap<u8, (u64, u64)>,
}

impl Aggregate {
    fn add(
        &mut self,
        bytes: u64,
        birth_ms: u64,
        generation: u32,
        epoch: u8,
        now_ms: u64,
        weight: f64,
    ) {
        if self.count == 0 {
            self.oldest_ms = birth_ms;
            self.newest_ms = birth_ms;
        }
        self.count += 1;
        self.bytes += bytes;
        self.est_count += weight;
        self.est_bytes += weight * bytes as f64;
        self.oldest_ms = self.oldest_ms.min(birth_ms);
        self.newest_ms = self.newest_ms.max(birth_ms);
        let age = now_ms.saturating_sub(birth_ms);
        let bucket = AGE_BUCKETS_MS
            .iter()
            .position(|&b| age < b)
            .unwrap_or(AGE_BUCKETS_MS.len());
        self.age_hist[bucket] += 1;
        let g = self.by_generation.entry(generation).or_default();
        g.0 += 1;
        g.1 += bytes;
        let e = self.by_epoch.entry(epoch).or_default();
        e.0 += 1;
        e.1 += bytes;
    }

    /// At most MAX_GENERATION_ROWS rows. A row stands for the generations after the previous
    /// row's up to its own; when there are too many, the merge that leaves the narrowest range
    /// is made, so rows stay evenly spread over the run, and the first row (what survives from
    /// start-up) stays exact.
    pub fn generation_rows(&self) -> Vec<(u32, u64, u64)> {
        let mut rows: Vec<(u32, u64, u64)> = self
            .by_generation
            .iter()
            .map(|(&g, &(c, b))| (g, c, b))
            .collect();
        while rows.len() > MAX_GENERATION_ROWS {
            // Merging row i into row i+1 makes row i+1 span (rows[i-1].0, rows[i+1].0].
            let i = (1..rows.len() - 1)
                .min_by_key(|&i| (rows[i + 1].0 - rows[i - 1].0, i))
                .expect("more than MAX_GENERATION_ROWS rows");
            let (_, c, b) = rows.remove(i);
            rows[i].1 += c;
            rows[i].2 += b;
        }
        rows
    }
}

pub struct Snapshot {
    pub uptime_ms: u64,
    pub outstanding: Vec<((u32, Kind), Aggregate)>,
    pub totals: BTreeMap<Kind, (u64, u64)>,
    pub intervals: Vec<(u64, Interval)>,
    pub live_records: u64,
    pub malloc_addrs_mmapped: Vec<u64>,
    /// Longest time one shard's lock was held by this snapshot: the worst stall it could
    /// cause an allocating thread.
    pub max_shard_hold_us: f64,
}

/// Weight of a sampled allocation of `size` bytes under a Poisson sampler with mean `mean`:
/// it was chosen with probability 1 - exp(-size/mean), so it stands for 1/p allocations.
fn sample_weight(size: u64, mean: u64) -> f64 {
    if mean == 0 {
        return 1.0;
    }
    let p = 1.0 - (-(size as f64) / mean as f64).exp();
    if p <= 0.0 {
        1.0
    } else {
        1.0 / p
    }
}

pub fn take(st: &State) -> Snapshot {
    let now_ms = st.uptime_ms();
    let mean = st.config.sample_bytes;
    let current_gen = st.generation.load(core::sync::atomic::Ordering::Relaxed);
    let mut agg: HashMap<(u32, Kind), Aggregate> = HashMap::new();
    let mut buf: Vec<Slot> = Vec::new();
    let mut raw: Vec<[u64; 3]> = Vec::new();
    let mut live_records = 0u64;
    let mut big_blocks = Vec::new();
    let mut max_hold_ns = 0u64;
    for shard in 0..SHARDS {
        buf.clear();
        let t0 = offheap_core::sys::monotonic_ns();
        st.live.copy_shard(shard, &mut raw, &mut buf);
        max_hold_ns = max_hold_ns.max(offheap_core::sys::monotonic_ns() - t0);
        live_records += buf.len() as u64;
        for s in &buf {
            let weight = if s.flags & FLAG_SAMPLED != 0 {
                sample_weight(s.size, mean)
            } else {
                1.0
            };
            agg.entry((s.stack, Kind::Malloc)).or_default().add(
                s.size,
                s.birth_ms as u64,
                widen_generation(s.generation, current_gen),
                s.epoch,
                now_ms,
                weight,
            );
            if s.size >= 128 * 1024 {
                big_blocks.push(s.addr);
            }
        }
    }
    let intervals: Vec<(u64, Interval)> = {
        let map = st.intervals.lock();
        map.iter().map(|(&s, iv)| (s, *iv)).collect()
    };
    for (start, iv) in &intervals {
        agg.entry((iv.birth.stack, iv.kind())).or_default().add(
            iv.end - start,
            iv.birth.ms as u64,
            widen_generation(iv.birth.generation, current_gen),
            iv.birth.epoch,
            now_ms,
            1.0,
        );
    }
    let mut totals: BTreeMap<Kind, (u64, u64)> = BTreeMap::new();
    for k in [
        Kind::Malloc,
        Kind::MmapAnon,
        Kind::MmapFile,
        Kind::MmapReserved,
    ] {
        totals.insert(k, (0, 0));
    }
    for ((_, kind), a) in &agg {
        let t = totals.entry(*kind).or_default();
        if mean > 0 && *kind == Kind::Malloc {
            t.0 += a.est_count.round() as u64;
            t.1 += a.est_bytes.round() as u64;
        } else {
            t.0 += a.count;
            t.1 += a.bytes;
        }
    }
    let mut outstanding: Vec<_> = agg.into_iter().collect();
    outstanding.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(&b.0)));
    big_blocks.sort_unstable();
    Snapshot {
        uptime_ms: now_ms,
        outstanding,
        totals,
        intervals,
        live_records,
        malloc_addrs_mmapped: big_blocks,
        max_shard_hold_us: max_hold_ns as f64 / 1e3,
    }
}

/// Records keep 16 bits of generation; recover the full number relative to the current one.
fn widen_generation(g: u16, current: u32) -> u32 {
    let delta = (current as u16).wrapping_sub(g) as u32;
    current.saturating_sub(delta)
}
